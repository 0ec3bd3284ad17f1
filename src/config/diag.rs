//! Diagnostics: one user-facing error in a configuration file, located as `path:line:col`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One mistake in one file. Validation collects all of them before anything reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// All diagnostics of a validation, as one error value for `anyhow` callers: one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn lines(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(Diagnostic::to_string).collect();
    lines.join("\n")
}

/// Collects diagnostics for one source file, turning byte spans into line and column.
pub struct Reporter<'a> {
    path: &'a Path,
    source: &'a str,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub fn new(path: &'a Path, source: &'a str) -> Self {
        Self {
            path,
            source,
            diagnostics: Vec::new(),
        }
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.source, span.start);
        self.diagnostics.push(Diagnostic {
            path: self.path.to_path_buf(),
            line,
            col,
            message: one_line(message.into()),
        });
    }
}

/// The message with the characters that would break `path:line:col: message` over several
/// lines or reorder it on screen shown escaped: a value quoted from the file may hold them.
fn one_line(message: String) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !message.chars().any(unsafe_char) {
        return message;
    }
    message
        .chars()
        .map(|c| match unsafe_char(c) {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The closest known name to a misspelt one, if it is close enough to be a likely typo.
pub fn suggest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
    }

    #[test]
    fn messages_are_one_line_as_shown() {
        let path = Path::new("job.toml");
        let mut rep = Reporter::new(path, "a = 1\n");
        rep.error(
            0..1,
            "unknown variant `multi\nline\r\u{202e}x\u{2028}`, tab\there, ü",
        );
        assert_eq!(
            rep.diagnostics[0].to_string(),
            "job.toml:1:1: unknown variant `multi\\nline\\r\\u{202e}x\\u{2028}`, tab\\there, ü"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let known = ["schedule", "timezone", "name"];
        assert_eq!(suggest("shedule", &known), Some("schedule"));
        assert_eq!(suggest("timzone", &known), Some("timezone"));
        assert_eq!(suggest("zzz", &known), None);
    }
}
