//! Printing for people: diagnostics like a compiler's, error chains like uv's.

use std::fmt::Write as _;
use std::path::Path;

use crate::diag::{Diagnostic, Severity};
pub use crate::render::Style;

/// Renders diagnostics with the source line and a caret when the text is at hand.
pub fn render_diagnostics<'a>(
    diags: &[Diagnostic],
    source: impl Fn(&Path) -> Option<&'a str>,
    style: Style,
) -> String {
    let mut out = String::new();
    for d in diags {
        let label = match d.severity {
            Severity::Error => style.error("error"),
            Severity::Warning => style.warn("warning"),
        };
        let path = if d.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", d.path)
        };
        let _ = writeln!(
            out,
            "{}: {label}: {path}{}",
            style.bold(&d.location()),
            d.message
        );
        if let (Some(pos), Some(text), false) = (d.pos, source(&d.file), d.redacted)
            && let Some(full) = text.lines().nth(pos.line.saturating_sub(1) as usize)
        {
            let (line, col) = excerpt(full, pos.col.saturating_sub(1) as usize);
            let num = pos.line.to_string();
            let pad = " ".repeat(num.len());
            let caret_pad: String = line
                .chars()
                .take(col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} {}", style.gutter("|"));
            let _ = writeln!(out, "{} {} {line}", style.gutter(&num), style.gutter("|"));
            let _ = writeln!(
                out,
                "{pad} {} {caret_pad}{}",
                style.gutter("|"),
                style.error("^")
            );
        }
        if let Some(h) = &d.hint {
            let _ = writeln!(out, "  {} {h}", style.bold("hint:"));
        }
        out.push('\n');
    }
    out
}

/// Longest source line shown whole; longer ones are cut around the column.
const EXCERPT_WIDTH: usize = 100;

/// The part of `line` to show, and the caret's column within it.
fn excerpt(line: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= EXCERPT_WIDTH {
        return (line.to_string(), col);
    }
    let start = col
        .saturating_sub(EXCERPT_WIDTH / 2)
        .min(chars.len().saturating_sub(EXCERPT_WIDTH));
    let end = (start + EXCERPT_WIDTH).min(chars.len());
    let mut shown: String = chars[start..end].iter().collect();
    let mut caret = col - start;
    if start > 0 {
        shown.insert_str(0, "...");
        caret += 3;
    }
    if end < chars.len() {
        shown.push_str("...");
    }
    (shown, caret)
}

/// An error and its causes: `error: ...`, then `Caused by:` lines, then `hint:`.
pub fn error_report(e: &super::CliError, style: Style) -> String {
    let mut out = format!("{}: {e}", style.error("error"));
    let mut cause = std::error::Error::source(e);
    if cause.is_some() {
        out.push_str("\n\nCaused by:");
    }
    while let Some(c) = cause {
        let _ = write!(out, "\n  {c}");
        cause = c.source();
    }
    if let Some(h) = e.hint() {
        let _ = write!(out, "\n\n{}: {h}", style.bold("hint"));
    }
    out
}
