//! The `--views FILE` format: views to create at start-up.
//!
//! ```text
//! # comment
//! usd: map redis/bitcoin to redis/views/usd as <value(/bpi/USD/rate_float)>
//! currencies: map redis/bitcoin
//!     to redis/views/bitcoin/<expand(/bpi)>
//! ```
//!
//! One view per entry, `NAME: SPEC`; a line starting with whitespace continues the previous
//! entry's specification; blank lines and lines starting with `#` are ignored. Views are created
//! in file order, which is also their precedence.

use super::ViewSpec;

/// A views file that cannot be loaded; the message names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ViewsFileError {
    /// The file's name as given.
    pub file: String,
    /// 1-based line of the entry.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses the file's text into (name, specification) pairs, checking every specification.
/// `file` is the name used in error messages.
pub fn parse_views_file(file: &str, text: &str) -> Result<Vec<(String, ViewSpec)>, ViewsFileError> {
    let mut entries: Vec<(usize, String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let Some(last) = entries.last_mut() else {
                return Err(ViewsFileError {
                    file: file.to_owned(),
                    line: number,
                    message: "continuation line before any view".to_owned(),
                });
            };
            last.2.push('\n');
            last.2.push_str(line);
            continue;
        }
        let Some((name, spec)) = line.split_once(':') else {
            return Err(ViewsFileError {
                file: file.to_owned(),
                line: number,
                message: "expected 'NAME: SPEC'".to_owned(),
            });
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ViewsFileError {
                file: file.to_owned(),
                line: number,
                message: format!("'{name}' is not a view name (one word)"),
            });
        }
        if entries.iter().any(|(_, n, _)| n == name) {
            return Err(ViewsFileError {
                file: file.to_owned(),
                line: number,
                message: format!("view '{name}' is defined twice"),
            });
        }
        entries.push((number, name.to_owned(), spec.trim().to_owned()));
    }
    entries
        .into_iter()
        .map(|(line, name, spec)| {
            ViewSpec::parse(&spec)
                .map(|parsed| (name, parsed))
                .map_err(|e| ViewsFileError {
                    file: file.to_owned(),
                    line,
                    message: format!("invalid view specification\n{e}"),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_comments_and_continuations() {
        let text = "# views\n\nusd: map redis/bitcoin to redis/views/usd as <value(/bpi/USD/rate_float)>\n\
                    all: map redis/bitcoin\n    to redis/views/bitcoin/<expand(/bpi)>\n";
        let views = parse_views_file("views.txt", text).unwrap();
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].0, "usd");
        assert_eq!(views[1].0, "all");
        assert!(views[1].1.as_str().contains("expand"));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_views_file("v.txt", "a: map x to y\nbad line\n").unwrap_err();
        assert_eq!((err.line, err.file.as_str()), (2, "v.txt"));
        let err = parse_views_file("v.txt", "a: map x to y\na: map x to z\n").unwrap_err();
        assert!(err.message.contains("twice"));
        let err = parse_views_file("v.txt", "\n\nb: map x too y\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.to_string().contains("v.txt:3:"), "{err}");
        assert!(parse_views_file("v.txt", "  map x to y\n").is_err());
    }
}
