//! Character-level scanning shared by every part of the view parser: whitespace, keywords, and
//! *clauses* — runs of text in which quotes group characters (whitespace included) and `\`
//! escapes the next character.
//!
//! A clause comes out as a list of [`Lit`]s: each character after quote removal, whether it was
//! escaped or quoted, and where it came from in the source, so the later parsers (templates,
//! conditions, calc) can tell structural characters from literal ones and point errors at the
//! right column.

use std::ops::Range;

use super::error::ViewSpecError;

/// Byte range in the specification text.
pub(crate) type Span = Range<usize>;

/// One character of a clause after quote and escape processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lit {
    /// The character itself.
    pub ch: char,
    /// Written as `\c`: never structural.
    pub escaped: bool,
    /// Inside quotes: whitespace is kept, but `<`, `(`, `)`, `,` stay structural.
    pub quoted: bool,
    /// Byte offset of the first source byte (the `\` for an escaped character).
    pub start: usize,
    /// Byte offset just past the character.
    pub end: usize,
}

impl Lit {
    /// True when this is `c` and not escaped (quoting does not protect structural characters;
    /// only `\` does).
    pub fn is(&self, c: char) -> bool {
        self.ch == c && !self.escaped
    }

    /// Whitespace that a trim may drop: neither escaped nor quoted.
    pub fn is_bare_space(&self) -> bool {
        self.ch.is_whitespace() && !self.escaped && !self.quoted
    }
}

/// How a clause ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClauseKind {
    /// Ends at unquoted whitespace.
    Plain,
    /// Like `Plain`, but whitespace inside a directive's parentheses (`<expand(/a, /b)>`) does
    /// not end it.
    Template,
}

/// A clause read by [`Scanner::read_clause`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    /// The characters after quote and escape processing.
    pub lits: Vec<Lit>,
    /// Where the clause sits in the source, quotes included.
    pub span: Span,
    /// Whether any quote was used (so `''` is an empty but present clause).
    pub quoted: bool,
}

impl Clause {
    /// The clause's text after quote and escape processing.
    pub fn text(&self) -> String {
        self.lits.iter().map(|l| l.ch).collect()
    }

    /// Nothing was written at all (not even `''`).
    pub fn is_missing(&self) -> bool {
        self.lits.is_empty() && !self.quoted
    }
}

/// Where the template directive tracker is, so whitespace inside `<name( … )>` stays in the
/// clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Outside,
    Name,
    Args,
    AfterArgs,
}

impl Directive {
    fn next(self, c: char) -> Self {
        match (self, c) {
            (Self::Outside, '<') => Self::Name,
            (Self::Outside, _) => Self::Outside,
            (Self::Name, '(') => Self::Args,
            (Self::Name, '>') => Self::Outside,
            (Self::Name, _) => Self::Name,
            (Self::Args, ')') => Self::AfterArgs,
            (Self::Args, _) => Self::Args,
            (Self::AfterArgs, _) => Self::Outside,
        }
    }
}

/// Characters that may continue a keyword; a keyword must not be followed by one.
pub(crate) fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A cursor over the specification text.
pub(crate) struct Scanner<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// Starts at the beginning of `src`.
    pub fn new(src: &'a str) -> Self {
        Self { src, pos: 0 }
    }

    /// The whole specification text.
    pub fn src(&self) -> &'a str {
        self.src
    }

    /// Current byte offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next character, if any.
    pub fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Skips whitespace (newlines included).
    pub fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// True once everything has been read.
    pub fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// An error about `span`.
    pub fn error(&self, span: Span, message: impl Into<String>) -> ViewSpecError {
        ViewSpecError::new(self.src, span, message)
    }

    /// An error pointing at whatever comes next (the next whitespace-delimited run, or the end).
    pub fn error_here(&self, message: impl Into<String>) -> ViewSpecError {
        self.error(self.next_word_span(), message)
    }

    /// The span of the next whitespace-delimited run of raw text (empty at the end).
    pub fn next_word_span(&self) -> Span {
        let rest = &self.src[self.pos..];
        let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        self.pos..self.pos + len
    }

    /// Does the keyword `kw` (ASCII, matched case-insensitively, not followed by a letter, digit
    /// or `_`) come next?
    pub fn peek_keyword(&self, kw: &str) -> bool {
        let rest = &self.src[self.pos..];
        rest.is_char_boundary(kw.len())
            && rest.len() >= kw.len()
            && rest[..kw.len()].eq_ignore_ascii_case(kw)
            && !rest[kw.len()..].chars().next().is_some_and(is_ident)
    }

    /// Consumes the keyword `kw` if it comes next.
    pub fn eat_keyword(&mut self, kw: &str) -> Option<Span> {
        if self.peek_keyword(kw) {
            let start = self.pos;
            self.pos += kw.len();
            Some(start..self.pos)
        } else {
            None
        }
    }

    /// Skips whitespace, then requires the keyword `kw`, or fails with `message` pointing at
    /// what is there instead.
    pub fn expect_keyword(&mut self, kw: &str, message: &str) -> Result<Span, ViewSpecError> {
        self.skip_ws();
        match self.eat_keyword(kw) {
            Some(span) => Ok(span),
            None => Err(self.error_here(message)),
        }
    }

    /// Consumes `c` if it comes next.
    pub fn eat_char(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Skips whitespace, then requires `c`, or fails with `message`.
    pub fn expect_char(&mut self, c: char, message: &str) -> Result<(), ViewSpecError> {
        self.skip_ws();
        if self.eat_char(c) {
            Ok(())
        } else {
            Err(self.error_here(message))
        }
    }

    /// Reads one clause starting here: up to unquoted whitespace, the end, or an unquoted,
    /// unescaped character from `stops` (outside any directive). Quotes (`'` or `"`) group and are
    /// removed; `\` makes the next character literal.
    pub fn read_clause(
        &mut self,
        kind: ClauseKind,
        stops: &[char],
    ) -> Result<Clause, ViewSpecError> {
        let start = self.pos;
        let mut lits = Vec::new();
        let mut quote: Option<(char, usize)> = None;
        let mut quoted_any = false;
        let mut directive = Directive::Outside;
        while let Some(c) = self.peek() {
            let at = self.pos;
            if c == '\\' {
                self.bump();
                let Some(next) = self.bump() else {
                    return Err(self.error(
                        at..self.pos,
                        "a '\\' must be followed by the character it escapes",
                    ));
                };
                lits.push(Lit {
                    ch: next,
                    escaped: true,
                    quoted: quote.is_some(),
                    start: at,
                    end: self.pos,
                });
                continue;
            }
            match quote {
                Some((q, _)) if c == q => {
                    self.bump();
                    quote = None;
                    continue;
                }
                Some(_) => {}
                None => {
                    if c == '\'' || c == '"' {
                        self.bump();
                        quote = Some((c, at));
                        quoted_any = true;
                        continue;
                    }
                    let in_args = kind == ClauseKind::Template && directive == Directive::Args;
                    if c.is_whitespace() && !in_args {
                        break;
                    }
                    if directive == Directive::Outside && stops.contains(&c) {
                        break;
                    }
                }
            }
            self.bump();
            if kind == ClauseKind::Template {
                directive = directive.next(c);
            }
            lits.push(Lit {
                ch: c,
                escaped: false,
                quoted: quote.is_some(),
                start: at,
                end: self.pos,
            });
        }
        if let Some((q, open)) = quote {
            return Err(self.error(
                open..self.pos,
                format!("unterminated quote: this {q} is never closed"),
            ));
        }
        Ok(Clause {
            lits,
            span: start..self.pos,
            quoted: quoted_any,
        })
    }
}

/// Drops bare (unquoted, unescaped) whitespace from both ends.
pub(crate) fn trim(lits: &[Lit]) -> &[Lit] {
    let start = lits
        .iter()
        .position(|l| !l.is_bare_space())
        .unwrap_or(lits.len());
    let end = lits
        .iter()
        .rposition(|l| !l.is_bare_space())
        .map_or(start, |i| i + 1);
    &lits[start..end]
}

/// The span covered by `lits`, or `fallback` when there are none.
pub(crate) fn span_of(lits: &[Lit], fallback: Span) -> Span {
    match (lits.first(), lits.last()) {
        (Some(first), Some(last)) => first.start..last.end,
        _ => fallback,
    }
}

/// The text of `lits`.
pub(crate) fn text_of(lits: &[Lit]) -> String {
    lits.iter().map(|l| l.ch).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(src: &str, kind: ClauseKind, stops: &[char]) -> (String, usize) {
        let mut s = Scanner::new(src);
        let c = s.read_clause(kind, stops).unwrap();
        (c.text(), s.pos())
    }

    #[test]
    fn plain_clauses_end_at_whitespace() {
        assert_eq!(
            clause("?a// to", ClauseKind::Plain, &[]),
            ("?a//".into(), 4)
        );
        assert_eq!(
            clause("'a b'c\\ d e", ClauseKind::Plain, &[]),
            ("a bc d".into(), 9)
        );
        assert_eq!(
            clause(r#""it's" x"#, ClauseKind::Plain, &[]),
            ("it's".into(), 6)
        );
        assert_eq!(clause("a,b", ClauseKind::Plain, &[',']), ("a".into(), 1));
    }

    #[test]
    fn template_clauses_keep_spaces_inside_directive_arguments() {
        assert_eq!(
            clause("x/<expand(/a, /b)> as", ClauseKind::Template, &[]),
            ("x/<expand(/a, /b)>".into(), 18)
        );
        assert_eq!(
            clause("x/<path (1)>", ClauseKind::Template, &[]),
            ("x/<path".into(), 7)
        );
    }

    #[test]
    fn escapes_are_marked() {
        let mut s = Scanner::new(r"a\)b");
        let c = s.read_clause(ClauseKind::Plain, &[]).unwrap();
        assert!(c.lits[1].escaped && c.lits[1].ch == ')');
        assert_eq!(c.lits[1].start..c.lits[1].end, 1..3);
    }

    #[test]
    fn unterminated_quote_and_dangling_escape_are_errors() {
        let mut s = Scanner::new("x 'abc");
        s.read_clause(ClauseKind::Plain, &[]).unwrap();
        s.skip_ws();
        let err = s.read_clause(ClauseKind::Plain, &[]).unwrap_err();
        assert_eq!(err.column(), 3);
        assert!(err.message().contains("unterminated quote"));
        let err = Scanner::new("ab\\")
            .read_clause(ClauseKind::Plain, &[])
            .unwrap_err();
        assert_eq!(err.column(), 3);
    }

    #[test]
    fn keywords_are_case_insensitive_and_whole_words() {
        let s = Scanner::new("Map x");
        assert!(s.peek_keyword("map"));
        assert!(!Scanner::new("mapx").peek_keyword("map"));
        assert!(Scanner::new("map(").peek_keyword("map"));
        assert!(!Scanner::new("ma").peek_keyword("map"));
        assert!(!Scanner::new("maé").peek_keyword("map"));
    }
}
