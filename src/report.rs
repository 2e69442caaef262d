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

/// `text` with the credentials of every URL in it replaced by `***`
/// (`https://user:token@host/x` becomes `https://user:***@host/x`, `https://token@host/x`
/// becomes `https://***@host/x`): URLs are logged and shown in the status API, and people put
/// tokens in them.
pub fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                match authority[..at].split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:***")),
                    None => out.push_str("***"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_urls_are_scrubbed() {
        assert_eq!(
            super::scrub_urls("fetch https://bot:ghp_abc@github.com/acme/deploy.git failed"),
            "fetch https://bot:***@github.com/acme/deploy.git failed"
        );
        assert_eq!(
            super::scrub_urls("https://ghp_abc@github.com/x and ssh://git@h:22/r"),
            "https://***@github.com/x and ssh://***@h:22/r"
        );
        assert_eq!(
            super::scrub_urls("https://github.com/a/b"),
            "https://github.com/a/b"
        );
        assert_eq!(super::scrub_urls("no url here"), "no url here");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_on_one_line() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(super::chain(&e), "outer: disk full");
    }
}
