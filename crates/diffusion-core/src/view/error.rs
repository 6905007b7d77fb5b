//! The one error type of the view language: where the specification went wrong and what was
//! expected there, rendered the way a compiler would show it.

use std::fmt;
use std::ops::Range;

/// A view specification that could not be parsed.
///
/// It carries the 1-based line and column of the offending text, the whole line it sits on and a
/// caret line underneath, so a CLI or an admin page can show the user exactly where to look:
///
/// ```text
/// 1:10: expected 'to' after the source selector
///   map ?a// too b
///            ^^^
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ViewSpecError {
    line: usize,
    column: usize,
    width: usize,
    message: String,
    source_line: String,
}

impl ViewSpecError {
    /// Builds an error about the bytes `span` of `text` (clamped to the text and to char
    /// boundaries, so a slightly-off span can never panic).
    pub(crate) fn new(text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let start = floor_boundary(text, span.start.min(text.len()));
        let end = floor_boundary(text, span.end.clamp(start, text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let source_line = text[line_start..line_end].trim_end_matches('\r');
        // A span on the line's `\r` (not shown) points just past the visible text.
        let visible_end = line_start + source_line.len();
        let shown = start.min(visible_end);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..shown].chars().count() + 1;
        let width = text[shown..end.min(visible_end).max(shown)]
            .chars()
            .count()
            .max(1);
        Self {
            line,
            column,
            width,
            // One line, so the rendering stays `line:column: message` / source / caret.
            message: message
                .into()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            source_line: source_line.to_owned(),
        }
    }

    /// 1-based line of the offending text.
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column (in characters) of the offending text.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What went wrong, or what was expected at that place.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The full line of the specification that holds the offending text.
    pub fn source_line(&self) -> &str {
        &self.source_line
    }

    /// The line to print under [`ViewSpecError::source_line`]: spaces (tabs kept, so it lines up)
    /// then one `^` per offending character.
    pub fn caret_line(&self) -> String {
        let pad: String = self
            .source_line
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        format!("{pad}{}", "^".repeat(self.width))
    }
}

impl fmt::Display for ViewSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}\n  {}\n  {}",
            self.line,
            self.column,
            self.message,
            self.source_line,
            self.caret_line()
        )
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_column_and_caret() {
        let text = "map a\n  to b\nmap ?a// too b";
        let at = text.find("too").unwrap();
        let err = ViewSpecError::new(text, at..at + 3, "expected 'to'");
        assert_eq!((err.line(), err.column()), (3, 10));
        assert_eq!(
            err.to_string(),
            "3:10: expected 'to'\n  map ?a// too b\n           ^^^"
        );
    }

    #[test]
    fn empty_span_at_end_gets_one_caret() {
        let err = ViewSpecError::new("map a to", 8..8, "expected a path template");
        assert_eq!((err.line(), err.column()), (1, 9));
        assert_eq!(err.caret_line(), "        ^");
    }

    /// Found by fuzzing: an error on a line's `\r` put the caret past the shown line.
    #[test]
    fn a_carriage_return_is_not_a_column() {
        let err = ViewSpecError::new("\r", 0..1, "x");
        assert_eq!((err.line(), err.column()), (1, 1));
        assert_eq!(err.caret_line(), "^");
        let err = ViewSpecError::new("map a\r\nto", 5..6, "x");
        assert_eq!((err.line(), err.column()), (1, 6));
        assert!(err.column() <= err.source_line().chars().count() + 1);
    }

    #[test]
    fn spans_are_clamped_and_counted_in_chars() {
        let text = "map é to";
        let err = ViewSpecError::new(text, 5..100, "x");
        assert_eq!(err.column(), 5);
        assert_eq!(err.caret_line(), "    ^^^^");
        let err = ViewSpecError::new("\tab", 1..2, "x");
        assert_eq!(err.caret_line(), "\t^");
    }
}
