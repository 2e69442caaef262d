//! Splitting a long comment into parts a forge accepts, never inside a code fence or a
//! `<details>` block. Pure.

/// GitHub refuses issue comments longer than this many characters.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;

/// One piece of a comment, each balanced on its own (fences and `<details>` closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// Kept whole in one part (truncated if larger than a part).
    Block(String),
    /// A collapsible group whose items may be spread over parts: each part that holds some of
    /// them wraps them in `open` (the first) or `continued` (the others) and `close`.
    Group {
        /// Opens the group, e.g. `<details><summary>prod</summary>`.
        open: String,
        /// Opens the group again in a later part.
        continued: String,
        /// Closes it.
        close: String,
        /// The items, each balanced.
        items: Vec<String>,
    },
}

/// How to split.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest part, in bytes (a safe bound for characters too).
    pub max: usize,
    /// Replaces the tail of a block too large for any part; says where the rest is.
    pub truncated_note: String,
}

/// Splits `sections` into parts of at most `limits.max` bytes, each starting with
/// `heading(part, parts)` (1-based). The headings are sized for up to 99,999 parts.
pub fn split(
    sections: &[Section],
    limits: &Limits,
    heading: impl Fn(usize, usize) -> String,
) -> Vec<String> {
    let reserve = heading(99_999, 99_999).len();
    let budget = limits.max.saturating_sub(reserve);
    let fit = |text: &str, room: usize| -> String {
        if text.len() <= room {
            text.to_string()
        } else {
            truncate(text, room, &limits.truncated_note)
        }
    };
    let mut bodies: Vec<String> = Vec::new();
    let mut cur = String::new();
    for section in sections {
        match section {
            Section::Block(b) => {
                let b = fit(b, budget);
                if !cur.is_empty() && cur.len() + b.len() > budget {
                    bodies.push(std::mem::take(&mut cur));
                }
                cur.push_str(&b);
            }
            Section::Group {
                open,
                continued,
                close,
                items,
            } => {
                let wrap = open.len().max(continued.len()) + close.len();
                let room = budget.saturating_sub(wrap);
                let first = items.first().map_or(0, |i| fit(i, room).len());
                if !cur.is_empty() && cur.len() + open.len() + first + close.len() > budget {
                    bodies.push(std::mem::take(&mut cur));
                }
                cur.push_str(open);
                for item in items {
                    let item = fit(item, room);
                    if cur.len() + item.len() + close.len() > budget {
                        cur.push_str(close);
                        bodies.push(std::mem::take(&mut cur));
                        cur.push_str(continued);
                    }
                    cur.push_str(&item);
                }
                cur.push_str(close);
            }
        }
    }
    if !cur.is_empty() || bodies.is_empty() {
        bodies.push(cur);
    }
    let n = bodies.len();
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| heading(i + 1, n) + &b)
        .collect()
}

/// What must be appended to close everything open after `lines`: fence and `<details>`.
#[derive(Debug, Default, Clone, Copy)]
struct Open {
    fence: bool,
    details: usize,
}

impl Open {
    fn after(mut self, line: &str) -> Self {
        let t = line.trim_start();
        if t.starts_with("```") {
            self.fence = !self.fence;
        } else if !self.fence {
            self.details += t.matches("<details>").count();
            self.details = self.details.saturating_sub(t.matches("</details>").count());
        }
        self
    }

    fn closers(self) -> String {
        let fence = if self.fence { "```\n" } else { "" };
        fence.to_string() + &"</details>\n".repeat(self.details)
    }
}

/// Keeps whole lines of `text` while they, `note` and whatever closes the open fence and
/// `<details>` fit in `max` bytes.
pub fn truncate(text: &str, max: usize, note: &str) -> String {
    let mut kept = 0;
    let mut open = Open::default();
    for line in text.split_inclusive('\n') {
        let next = open.after(line);
        if kept + line.len() + note.len() + next.closers().len() > max {
            break;
        }
        kept += line.len();
        open = next;
    }
    // Close the fence first, then the note, then the `<details>`, so the note is visible.
    let fence = if open.fence { "```\n" } else { "" };
    format!(
        "{}{fence}{note}{}",
        &text[..kept],
        "</details>\n".repeat(open.details)
    )
}

/// Whether every fence and `<details>` in `text` is closed, in order (for tests and checks).
pub fn balanced(text: &str) -> bool {
    let mut fence = false;
    let mut depth: usize = 0;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") {
            fence = !fence;
        } else if !fence {
            // Opens and closes count in the order they appear on the line.
            let mut rest = t;
            while let Some((opens, after)) = next_tag(rest) {
                if opens {
                    depth += 1;
                } else if depth == 0 {
                    return false;
                } else {
                    depth -= 1;
                }
                rest = after;
            }
        }
    }
    !fence && depth == 0
}

/// The next `<details>` (true) or `</details>` (false) in `s`, and what follows it.
fn next_tag(s: &str) -> Option<(bool, &str)> {
    let open = s.find("<details>");
    let close = s.find("</details>");
    match (open, close) {
        (Some(o), Some(c)) if o < c => Some((true, &s[o + 9..])),
        (_, Some(c)) => Some((false, &s[c + 10..])),
        (Some(o), None) => Some((true, &s[o + 9..])),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            max,
            truncated_note: "\n> truncated\n\n".into(),
        }
    }

    #[test]
    fn one_part_when_it_fits() {
        let parts = split(
            &[Section::Block("hello\n".into())],
            &limits(1000),
            |i, n| format!("<!-- {i}/{n} -->\n"),
        );
        assert_eq!(parts, vec!["<!-- 1/1 -->\nhello\n".to_string()]);
    }

    #[test]
    fn groups_reopen_in_the_next_part() {
        let item = |i: usize| {
            format!("<details><summary>c{i}</summary>\n\n```diff\n+x\n```\n</details>\n")
        };
        let group = Section::Group {
            open: "<details><summary>prod</summary>\n\n".into(),
            continued: "<details><summary>prod (continued)</summary>\n\n".into(),
            close: "</details>\n".into(),
            items: (0..20).map(item).collect(),
        };
        let parts = split(&[group], &limits(400), |i, n| format!("<!-- {i}/{n} -->\n"));
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(p.len() <= 400, "{}", p.len());
            assert!(balanced(p), "{p}");
        }
        assert!(parts[1].contains("prod (continued)"));
        let all: String = parts.concat();
        for i in 0..20 {
            assert_eq!(all.matches(&format!("<summary>c{i}</summary>")).count(), 1);
        }
    }

    #[test]
    fn truncation_closes_what_it_opened() {
        let long = format!(
            "<details><summary>big</summary>\n\n```diff\n{}```\n</details>\n",
            "+line\n".repeat(1000)
        );
        let t = truncate(&long, 300, "\n> truncated\n\n");
        assert!(t.len() <= 300, "{}", t.len());
        assert!(balanced(&t), "{t}");
        assert!(t.contains("> truncated"));
        assert!(t.ends_with("</details>\n"));
    }

    #[test]
    fn balance_checks_order() {
        assert!(balanced("<details>\n```\n</details>\n```\n</details>\n"));
        assert!(!balanced("</details><details>\n"));
        assert!(!balanced("```\n"));
    }
}
