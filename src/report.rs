//! How an error reads where one line must do (history, status, progress): the error and each of
//! its causes, joined by `: `. The command line prints the same chain as `Caused by:` lines.

/// The error and its causes on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        // A cause already quoted by its error's message is not said twice.
        if !out.ends_with(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_on_one_line() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(super::chain(&e), "outer: disk full");
    }
}
