//! Strings a person wrote (versions, reasons, paths, messages) made harmless for the markdown
//! or HTML context they land in: a pull request comment is read on the forge, where a version
//! with a newline could otherwise open a heading, an image or a link of its author's choosing.

/// Text for inline markdown: line breaks and control characters become spaces, and what
/// markdown would read as syntax (emphasis, code, links, images, HTML, tables, strike-through,
/// and the forge's autolinks of `scheme://`, `www.` and e-mail addresses) is backslash-escaped,
/// so it reads as written and links nowhere. For text that starts a line, see [`paragraph`].
pub fn text(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        let escape = match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '!' | '|' | '~' | '&' | '#' | '@' => true,
            // `https://`: a scheme autolink.
            ':' => chars.get(i + 1) == Some(&'/') && chars.get(i + 2) == Some(&'/'),
            // `www.`: a domain autolink.
            '.' => i >= 3 && chars[i - 3..i].iter().all(|w| w.eq_ignore_ascii_case(&'w')),
            _ => false,
        };
        if c.is_control() {
            out.push(' ');
        } else {
            if escape {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Text in which Keelson quoted values between backticks (its messages: "unknown field
/// `capacty`"): the quoted parts become code spans, the rest [`text`]. Whatever the values
/// hold (a backtick too), every part is one or the other, so nothing escapes.
pub fn quoted(s: &str) -> String {
    s.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 && !part.is_empty() {
                code(part)
            } else {
                text(part)
            }
        })
        .collect()
}

/// [`quoted`] text that starts a line: a first character that would open a heading, a list,
/// a quote or a table there is escaped too.
pub fn paragraph(s: &str) -> String {
    let out = quoted(s);
    let first = out.chars().next();
    let numbered = out
        .split_once(['.', ')'])
        .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if matches!(first, Some('-' | '+' | '>' | '=')) || numbered {
        format!("\\{out}")
    } else {
        out
    }
}

/// An inline code span holding `s` exactly (but for line breaks, which become spaces): its
/// fence is longer than any run of backticks inside.
pub fn code(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let fence = "`".repeat(longest_run(&s, '`') + 1);
    // A span that starts or ends with a backtick needs a space between it and the fence.
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// A fenced code block holding `body` (lines as they are): its fence is longer than any run of
/// backticks inside, so no line can close it.
pub fn fence(info: &str, body: &str) -> String {
    let fence = "`".repeat((longest_run(body, '`') + 1).max(3));
    let mut out = format!("{fence}{info}\n{body}");
    if !body.is_empty() && !body.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&fence);
    out.push('\n');
    out
}

/// Text for an HTML context (`<summary>`, attributes): entities for `& < > " '`.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A path for a URL: everything but unreserved characters and `/` percent-encoded.
pub fn url_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn longest_run(s: &str, ch: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in s.chars() {
        if c == ch {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gfm(md: &str) -> String {
        let mut o = comrak::Options::default();
        o.extension.autolink = true;
        o.extension.table = true;
        o.extension.strikethrough = true;
        o.render.r#unsafe = true;
        comrak::markdown_to_html(md, &o)
    }

    #[test]
    fn spans_and_fences_outlast_what_they_hold() {
        assert_eq!(code("1.0.0"), "`1.0.0`");
        assert_eq!(code("a``b"), "```a``b```");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(code("a\nb"), "`a b`");
        assert_eq!(fence("diff", "-a\n+b\n"), "```diff\n-a\n+b\n```\n");
        assert!(fence("", "````\n").starts_with("`````\n"));
        assert_eq!(text("# 1.0\n![x](y)"), "\\# 1.0 \\!\\[x\\](y)");
        assert_eq!(quoted("unknown field `capacty`"), "unknown field `capacty`");
        assert_eq!(quoted("a `b*` c*"), "a `b*` c\\*");
        assert_eq!(paragraph("- x"), "\\- x");
        assert_eq!(paragraph("1. x"), "\\1. x");
        assert_eq!(html("<a href=\"x\">"), "&lt;a href=&quot;x&quot;&gt;");
        assert_eq!(url_path("a b/(c).yaml"), "a%20b/%28c%29.yaml");
    }

    #[test]
    fn hostile_text_renders_as_text() {
        for hostile in [
            "1.0\n\n### Keelson plan: ✅ no changes",
            "![x](https://evil.example/pixel.png)",
            "[click](https://evil.example)",
            "https://evil.example/login and www.evil.example and a@evil.example",
            "<img src=x onerror=alert(1)>",
            "````\n- fake step",
            "| a | b |\n|---|---|",
            "**bold** _em_ ~~gone~~",
        ] {
            let html = gfm(&format!("before {} after", text(hostile)));
            for bad in [
                "<h3", "<img", "<a ", "<strong", "<em", "<del", "<table", "<pre", "<li",
            ] {
                assert!(!html.contains(bad), "{hostile:?} rendered {bad}: {html}");
            }
            let html = gfm(&format!("before {} after", code(hostile)));
            for bad in ["<h3", "<img", "<a ", "<table", "<pre", "<li"] {
                assert!(
                    !html.contains(bad),
                    "{hostile:?} as code rendered {bad}: {html}"
                );
            }
        }
    }
}
