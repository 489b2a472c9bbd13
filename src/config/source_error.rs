//! Errors in files people edit (config, policies, agents), located by file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLocation {
    pub line: usize,
    pub column: usize,
}

/// An error in a human-edited file. Displays as `file:line:column: message` (like a compiler).
#[derive(Debug, Clone, thiserror::Error)]
pub struct SourceError {
    pub file: PathBuf,
    pub location: Option<SourceLocation>,
    pub message: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(l) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                l.line,
                l.column,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl SourceError {
    pub fn io(file: &Path, err: &std::io::Error) -> SourceError {
        SourceError {
            file: file.to_path_buf(),
            location: None,
            message: err.to_string(),
        }
    }

    pub fn semantic(file: &Path, message: String) -> SourceError {
        SourceError {
            file: file.to_path_buf(),
            location: None,
            message,
        }
    }

    /// An error at a byte offset of `text`.
    pub fn at(file: &Path, text: &str, offset: usize, message: String) -> SourceError {
        SourceError {
            file: file.to_path_buf(),
            location: Some(locate(text, offset)),
            message,
        }
    }

    pub fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> SourceError {
        let message = without_values(err.message().trim());
        match err.span() {
            Some(span) => SourceError::at(file, text, span.start, message),
            None => SourceError::semantic(file, message),
        }
    }
}

/// serde's "invalid type: integer `1234567899`, expected a string" quotes the value it read: a
/// password typed where a vault reference belongs would reach the log and the reload answer (a
/// live review). The value is left out; field names (`unknown field `x``) stay.
fn without_values(message: &str) -> String {
    for what in ["invalid type: ", "invalid value: "] {
        if let Some(at) = message.find(what) {
            let rest = &message[at + what.len()..];
            let open = rest.find('`');
            let close = open.and_then(|o| rest[o + 1..].find('`').map(|c| o + 1 + c));
            if let (Some(open), Some(close)) = (open, close) {
                return format!(
                    "{}{what}{}(value not shown){}",
                    &message[..at],
                    &rest[..open],
                    &rest[close + 1..]
                );
            }
        }
    }
    message.to_string()
}

#[cfg(test)]
mod value_tests {
    #[test]
    fn values_read_are_left_out_of_toml_errors_and_names_stay() {
        assert_eq!(
            super::without_values("invalid type: integer `1234567899`, expected a string"),
            "invalid type: integer (value not shown), expected a string"
        );
        assert_eq!(
            super::without_values("invalid value: string `hunter2`, expected one of `a`, `b`"),
            "invalid value: string (value not shown), expected one of `a`, `b`"
        );
        let names = "unknown field `tlsx`, expected one of `listen`, `vault`";
        assert_eq!(super::without_values(names), names);
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn locate(text: &str, offset: usize) -> SourceLocation {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    SourceLocation {
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_offsets() {
        let t = "ab\ncdé\nf";
        assert_eq!(locate(t, 0), SourceLocation { line: 1, column: 1 });
        assert_eq!(locate(t, 3), SourceLocation { line: 2, column: 1 });
        assert_eq!(locate(t, 7), SourceLocation { line: 2, column: 4 });
        assert_eq!(locate(t, 8), SourceLocation { line: 3, column: 1 });
        assert_eq!(locate(t, 100), SourceLocation { line: 3, column: 2 });
    }
}
