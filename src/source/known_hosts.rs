//! OpenSSH `known_hosts` files: does a host's key match what the file says about the host?
//!
//! Pure: the file's text, the host as ssh names it and the key the server offered go in, a
//! verdict comes out. Supports what `ssh-keyscan` and `ssh` write: plain and hashed (`|1|`)
//! host names, `[host]:port`, comma-separated patterns with `*`, `?` and `!`, and `@revoked`.
//! `@cert-authority` lines are skipped (host certificates are not checked).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Digest;

/// What a known_hosts file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line names the host with this key (1-based line number).
    Known(usize),
    /// Lines name the host, with other keys: the first such line.
    Mismatch(usize),
    /// An `@revoked` line lists this key.
    Revoked(usize),
    /// No line names the host.
    Unknown,
}

/// The name ssh looks a host up by: `host` on port 22, else `[host]:port`.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key` (the key blob, as in the file's base64 field) offered by `host` (as from
/// [`host_name`]) against the text of a known_hosts file.
pub fn check(text: &str, host: &str, key: &[u8]) -> Verdict {
    let mut mismatch = None;
    let mut known = None;
    for (i, line) in text.lines().enumerate() {
        let Some(entry) = Entry::parse(line) else {
            continue;
        };
        match entry.marker {
            Marker::Revoked if entry.key == key => return Verdict::Revoked(i + 1),
            Marker::Revoked | Marker::CertAuthority => {}
            Marker::None if entry.names(host) => {
                if entry.key == key {
                    known.get_or_insert(i + 1);
                } else {
                    mismatch.get_or_insert(i + 1);
                }
            }
            Marker::None => {}
        }
    }
    // A matching line wins over a stale one, as in ssh (several keys per host are allowed).
    match (known, mismatch) {
        (Some(line), _) => Verdict::Known(line),
        (None, Some(line)) => Verdict::Mismatch(line),
        (None, None) => Verdict::Unknown,
    }
}

/// The fingerprint ssh prints for a key: `SHA256:` and the unpadded base64 of its digest.
pub fn fingerprint(key: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(sha2::Sha256::digest(key))
    )
}

/// The key type named in a key blob (its first SSH string), such as `ssh-ed25519`.
pub fn key_type(key: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
    let name = key.get(4..4 + usize::try_from(len).ok()?)?;
    std::str::from_utf8(name).ok()
}

#[derive(Debug, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

struct Entry<'a> {
    marker: Marker,
    hosts: &'a str,
    key: Vec<u8>,
}

impl<'a> Entry<'a> {
    /// One line; `None` for comments, blank lines and lines that are not an entry.
    fn parse(line: &'a str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next()?;
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            _ => Marker::None,
        };
        if marker != Marker::None {
            first = fields.next()?;
        }
        let _key_type = fields.next()?;
        let key = STANDARD.decode(fields.next()?).ok()?;
        Some(Self {
            marker,
            hosts: first,
            key,
        })
    }

    /// Whether the entry's host patterns name `host`: a positive pattern matches and no
    /// negated one does.
    fn names(&self, host: &str) -> bool {
        if let Some(hashed) = self.hosts.strip_prefix("|1|") {
            return hashed_matches(hashed, host);
        }
        let mut matched = false;
        for pattern in self.hosts.split(',') {
            match pattern.strip_prefix('!') {
                Some(p) if wildcard(p, host) => return false,
                Some(_) => {}
                None => matched |= wildcard(pattern, host),
            }
        }
        matched
    }
}

/// `salt|hash`, both base64: HMAC-SHA1 of the host name keyed with the salt.
fn hashed_matches(hashed: &str, host: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(host.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Glob matching with `*` (any run) and `?` (one character), case-insensitive as in ssh.
fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, never exponential.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c == n[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The key blob of an ed25519 key: the type name, then 32 bytes.
    fn blob(seed: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&11u32.to_be_bytes());
        b.extend_from_slice(b"ssh-ed25519");
        b.extend_from_slice(&32u32.to_be_bytes());
        b.extend(std::iter::repeat_n(seed, 32));
        b
    }

    fn line(hosts: &str, key: &[u8]) -> String {
        format!("{hosts} ssh-ed25519 {}\n", STANDARD.encode(key))
    }

    fn hashed(host: &str, salt: &[u8]) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(host.as_bytes());
        format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn plain_hashed_and_ported_names() {
        let (k, other) = (blob(1), blob(2));
        let text = format!(
            "# comment\n\n{}{}{}",
            line("github.com,140.82.121.4", &k),
            line("[git.example]:2222", &other),
            line(&hashed("[10.0.0.5]:7999", b"0123456789abcdefghij"), &k)
        );
        assert_eq!(check(&text, "github.com", &k), Verdict::Known(3));
        assert_eq!(check(&text, "GitHub.com", &k), Verdict::Known(3));
        assert_eq!(check(&text, "github.com", &other), Verdict::Mismatch(3));
        assert_eq!(
            check(&text, &host_name("git.example", 2222), &other),
            Verdict::Known(4)
        );
        // The port is part of the name: the same host on 22 is another entry.
        assert_eq!(check(&text, "git.example", &other), Verdict::Unknown);
        assert_eq!(
            check(&text, &host_name("10.0.0.5", 7999), &k),
            Verdict::Known(5)
        );
        assert_eq!(check(&text, "10.0.0.5", &k), Verdict::Unknown);
    }

    #[test]
    fn patterns_negation_revocation_and_several_keys() {
        let (k, other) = (blob(1), blob(2));
        let text = format!(
            "{}{}@cert-authority *.corp ssh-ed25519 {}\n",
            line("*.example.org,!evil.example.org", &k),
            line("git?.example.net", &k),
            STANDARD.encode(&other)
        );
        assert_eq!(check(&text, "git.example.org", &k), Verdict::Known(1));
        assert_eq!(check(&text, "evil.example.org", &k), Verdict::Unknown);
        assert_eq!(check(&text, "git1.example.net", &k), Verdict::Known(2));
        assert_eq!(check(&text, "git12.example.net", &k), Verdict::Unknown);
        assert_eq!(check(&text, "host.corp", &other), Verdict::Unknown);
        // A rotated key: the new line matches although an old one is still there.
        let rotated = format!("{}{}", line("h", &other), line("h", &k));
        assert_eq!(check(&rotated, "h", &k), Verdict::Known(2));
        let revoked = format!(
            "{}@revoked * ssh-ed25519 {}\n",
            line("h", &k),
            STANDARD.encode(&k)
        );
        assert_eq!(check(&revoked, "h", &k), Verdict::Revoked(2));
    }

    #[test]
    fn fingerprints_and_key_types_read_like_ssh() {
        // From `ssh-keygen -lf` on a key with this blob.
        let key = STANDARD
            .decode("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
            .unwrap();
        assert_eq!(key_type(&key), Some("ssh-ed25519"));
        assert_eq!(
            fingerprint(&key),
            "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
        );
        assert_eq!(key_type(&[0, 0, 0, 9, b'a']), None);
    }

    proptest! {
        #[test]
        fn any_text_gives_a_verdict(text in "\\PC{0,200}", host in "[a-z.\\[\\]:0-9]{0,20}") {
            let _ = check(&text, &host, &blob(1));
        }

        #[test]
        fn a_host_always_matches_its_own_plain_and_hashed_line(host in "[a-z0-9.-]{1,30}", port in 1u16..) {
            let name = host_name(&host, port);
            let k = blob(3);
            prop_assert_eq!(check(&line(&name, &k), &name, &k), Verdict::Known(1));
            prop_assert_eq!(check(&line(&hashed(&name, b"salt"), &k), &name, &k), Verdict::Known(1));
            prop_assert_eq!(check(&line(&name, &blob(4)), &name, &k), Verdict::Mismatch(1));
        }

        #[test]
        fn star_matches_everything_and_literal_patterns_only_themselves(a in "[a-z]{1,12}", b in "[a-z]{1,12}") {
            prop_assert!(wildcard("*", &a));
            prop_assert_eq!(wildcard(&a, &b), a == b);
        }
    }
}
