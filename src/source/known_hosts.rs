//! OpenSSH `known_hosts` files: does a host's key match what the file says about the host?
//!
//! Pure: the file's text, the host as ssh names it and the key the server offered go in, a
//! verdict comes out. Supports what `ssh-keyscan` and `ssh` write: plain and hashed (`|1|`)
//! host names, `[host]:port`, comma-separated patterns with `*`, `?` and `!`, and `@revoked`.
//! `@cert-authority` lines are skipped: a host certificate is checked as the plain key it
//! carries, which the server has proved it holds.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Digest;

/// What a known_hosts file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line names the host with this key (1-based line number).
    Known(usize),
    /// Lines name the host with another key of the offered type: the first such line.
    Mismatch(usize),
    /// Lines name the host, with keys of other types only: the first such line.
    OtherTypes(usize),
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
    let offered_type = key_type(key);
    let (mut known, mut mismatch, mut other_types) = (None, None, None);
    for (i, line) in text.lines().enumerate() {
        let Some(entry) = Entry::parse(line) else {
            continue;
        };
        match entry.marker {
            Marker::Revoked if entry.key == key => return Verdict::Revoked(i + 1),
            Marker::Revoked | Marker::CertAuthority => {}
            Marker::None if entry.names(host) => {
                let slot = if entry.key == key {
                    &mut known
                } else if key_type(&entry.key) == offered_type {
                    &mut mismatch
                } else {
                    &mut other_types
                };
                slot.get_or_insert(i + 1);
            }
            Marker::None => {}
        }
    }
    // A matching line wins over a stale one, as in ssh (several keys per host are allowed).
    match (known, mismatch, other_types) {
        (Some(line), _, _) => Verdict::Known(line),
        (None, Some(line), _) => Verdict::Mismatch(line),
        (None, None, Some(line)) => Verdict::OtherTypes(line),
        (None, None, None) => Verdict::Unknown,
    }
}

/// A known_hosts file: how to name it to a person, and its text.
#[derive(Debug, Clone)]
pub struct File {
    /// Its path as shown in errors.
    pub name: String,
    /// Its contents (empty when it does not exist).
    pub text: String,
}

/// Decides whether to trust the key `offered` by `host` on `port`, given the known_hosts
/// `files` in the order ssh reads them. The refusal says what was offered and what to do;
/// `from_flag` says whether the files were given with `--known-hosts`.
pub fn verify(
    files: &[File],
    host: &str,
    port: u16,
    offered: &[u8],
    from_flag: bool,
) -> Result<(), String> {
    // ssh looks hosts up in lower case; libgit2 passes an IPv6 literal with its brackets.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let name = host_name(&host, port);
    let plain = plain_key(offered);
    let key = plain.as_deref().unwrap_or(offered);
    let kind = key_type(key).unwrap_or("key");
    let described = format!("the ssh host key of {name} ({kind} {})", fingerprint(key));
    let line = format!("{name} {kind} {}", STANDARD.encode(key));
    let verdicts: Vec<(&File, Verdict)> = files
        .iter()
        .map(|f| (f, check(&f.text, &name, key)))
        .collect();
    let first = |want: fn(&Verdict) -> Option<usize>| {
        verdicts
            .iter()
            .find_map(|(f, v)| want(v).map(|n| (f.name.as_str(), n)))
    };
    if let Some((file, n)) = first(|v| match v {
        Verdict::Revoked(n) => Some(*n),
        _ => None,
    }) {
        return Err(format!("{described} is revoked at line {n} of {file}"));
    }
    if first(|v| match v {
        Verdict::Known(n) => Some(*n),
        _ => None,
    })
    .is_some()
    {
        return Ok(());
    }
    if let Some((file, n)) = first(|v| match v {
        Verdict::Mismatch(n) => Some(*n),
        _ => None,
    }) {
        return Err(format!(
            "{described} does not match line {n} of {file}: the connection may be intercepted, or the host changed its key; replace that line only if the forge confirms the new fingerprint"
        ));
    }
    let target = files
        .first()
        .map_or("~/.ssh/known_hosts", |f| f.name.as_str());
    let or_flag = if from_flag {
        ""
    } else {
        " (or pass --known-hosts or KEELSON_SSH_KNOWN_HOSTS with a file that has it)"
    };
    if let Some((file, n)) = first(|v| match v {
        Verdict::OtherTypes(n) => Some(*n),
        _ => None,
    }) {
        return Err(format!(
            "{described} is not in {file}, which knows the host only by keys of other types (line {n}): check that fingerprint with the forge, then add this line to {target}{or_flag}: {line}"
        ));
    }
    let searched: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    Err(format!(
        "{described} is not in {}: check that fingerprint with the forge, then add this line to {target}{or_flag}: {line}",
        if searched.is_empty() {
            "any known_hosts file".to_string()
        } else {
            searched.join(" or ")
        }
    ))
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
    let (name, _) = ssh_string(key)?;
    std::str::from_utf8(name).ok()
}

/// The plain public key inside an OpenSSH certificate blob (`*-cert-v01@openssh.com`);
/// `None` for anything else. The fields are as in OpenSSH's PROTOCOL.certkeys.
pub fn plain_key(blob: &[u8]) -> Option<Vec<u8>> {
    let kind = key_type(blob)?;
    let plain = kind.strip_suffix("-cert-v01@openssh.com")?;
    let fields = match plain {
        "ssh-ed25519" => 1,
        "ssh-rsa" => 2,
        "ssh-dss" => 4,
        t if t.starts_with("ecdsa-sha2-") => 2,
        _ => return None,
    };
    let (_, rest) = ssh_string(blob)?;
    let (_nonce, key_fields) = ssh_string(rest)?;
    let mut rest = key_fields;
    for _ in 0..fields {
        rest = ssh_string(rest)?.1;
    }
    let body = &key_fields[..key_fields.len() - rest.len()];
    let mut out = Vec::with_capacity(4 + plain.len() + body.len());
    out.extend_from_slice(&u32::try_from(plain.len()).ok()?.to_be_bytes());
    out.extend_from_slice(plain.as_bytes());
    out.extend_from_slice(body);
    Some(out)
}

/// One length-prefixed SSH string (or mpint) and what follows it.
fn ssh_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::try_from(u32::from_be_bytes(b.get(..4)?.try_into().ok()?)).ok()?;
    let end = 4usize.checked_add(len)?;
    Some((b.get(4..end)?, b.get(end..)?))
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
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
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

    // `ssh-keygen -s ca -h -n git.example` over an ed25519 and an rsa host key.
    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBndawXUUqlF9oef1TUmvE18G9Kn8xB2MN7S7JRXAX7z";
    const ED_CERT: &str = "AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIMOUDeoRsyOkV3Gkm3VEf+rwjU19kapi+Ne96/R/kDQeAAAAIBndawXUUqlF9oef1TUmvE18G9Kn8xB2MN7S7JRXAX7zAAAAAAAAAAAAAAACAAAABGhvc3QAAAAPAAAAC2dpdC5leGFtcGxlAAAAAAAAAAD//////////wAAAAAAAAAAAAAAAAAAADMAAAALc3NoLWVkMjU1MTkAAAAggnmGMdCUEdMGJJJNLK6ChCNDBiio8linZzQvbHAy11QAAABTAAAAC3NzaC1lZDI1NTE5AAAAQMCnIjSWJOJCgcUcHP6jiw/smYSHDn19Z0MO+xi/HlbuGKxErts7MGQ0waOx+7I8nPgBcpbRWVAoOffJBM/dAgY=";
    const RSA: &str = "AAAAB3NzaC1yc2EAAAADAQABAAAAgQDN5KfZWr/I7oQhTeunN3iBoQKse0zMgu3y0L8im4NIgXUvQT0WQ2CZKbjBsLet4QZcaz45oDfcemXMG3wyWFU5Nj0BQEV/cBIkF4z03HUhwEtlWvNGLLM77h45Dd8nnJnvHkbJnXq6ze3aL9+zXpPc3xAwkJM4wRyjH/auYl1Bpw==";
    const RSA_CERT: &str = "AAAAHHNzaC1yc2EtY2VydC12MDFAb3BlbnNzaC5jb20AAAAgC+w2OaPzb5oX3p4SjjVLhLhpxnHevrT4svotb7k2p7IAAAADAQABAAAAgQDN5KfZWr/I7oQhTeunN3iBoQKse0zMgu3y0L8im4NIgXUvQT0WQ2CZKbjBsLet4QZcaz45oDfcemXMG3wyWFU5Nj0BQEV/cBIkF4z03HUhwEtlWvNGLLM77h45Dd8nnJnvHkbJnXq6ze3aL9+zXpPc3xAwkJM4wRyjH/auYl1BpwAAAAAAAAAAAAAAAgAAAAFyAAAADwAAAAtnaXQuZXhhbXBsZQAAAAAAAAAA//////////8AAAAAAAAAAAAAAAAAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIIJ5hjHQlBHTBiSSTSyugoQjQwYoqPJYp2c0L2xwMtdUAAAAUwAAAAtzc2gtZWQyNTUxOQAAAEDxUpSqGjaMj/OoY+9JKTKu4OJxJLsBNbWBK3sLW1Elzy3LTLOikln96RoyzInzKHM4ripbysP5JaEpKYbRtKMD";

    fn b64(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap()
    }

    #[test]
    fn a_host_certificate_is_checked_as_the_key_it_carries() {
        assert_eq!(plain_key(&b64(ED_CERT)), Some(b64(ED)));
        assert_eq!(plain_key(&b64(RSA_CERT)), Some(b64(RSA)));
        assert_eq!(plain_key(&b64(ED)), None);
        // Cut short anywhere, a certificate gives no key rather than a wrong one.
        let cert = b64(ED_CERT);
        for n in 0..60 {
            assert_eq!(plain_key(&cert[..n]), None, "{n}");
        }
        let files = [File {
            name: "known_hosts".into(),
            text: format!("git.example ssh-ed25519 {ED}\n"),
        }];
        assert_eq!(
            verify(&files, "git.example", 22, &b64(ED_CERT), true),
            Ok(())
        );
    }

    #[test]
    fn a_key_of_another_type_is_not_called_a_changed_key() {
        let text = format!("git.example ssh-rsa {RSA}\n");
        assert_eq!(
            check(&text, "git.example", &b64(ED)),
            Verdict::OtherTypes(1)
        );
        let text = format!(
            "{text}git.example ssh-ed25519 {}\n",
            STANDARD.encode(blob(9))
        );
        assert_eq!(check(&text, "git.example", &b64(ED)), Verdict::Mismatch(2));
    }

    #[test]
    fn hosts_are_looked_up_as_ssh_writes_them() {
        let k = b64(ED);
        let files = [File {
            name: "kh".into(),
            text: format!(
                "{}::1 ssh-ed25519 {ED}\n",
                line(&hashed("git.example", b"s"), &k)
            ),
        }];
        assert_eq!(verify(&files, "GIT.Example", 22, &k, true), Ok(()));
        assert_eq!(verify(&files, "[::1]", 22, &k, true), Ok(()));
        assert!(verify(&files, "git.example", 2222, &k, true).is_err());
    }

    /// Every refusal a person can read, from fixed inputs.
    #[test]
    fn refusals_read_well() {
        let (ed, rsa) = (b64(ED), b64(RSA));
        let file = |name: &str, text: String| File {
            name: name.into(),
            text,
        };
        let home = "/home/keelson/.ssh/known_hosts";
        let global = "/etc/ssh/ssh_known_hosts";
        let cases = [
            (
                "unknown, default files",
                verify(
                    &[file(home, String::new()), file(global, String::new())],
                    "git.example",
                    22,
                    &ed,
                    false,
                ),
            ),
            (
                "unknown, --known-hosts, another port",
                verify(
                    &[file("deploy/known_hosts", String::new())],
                    "git.example",
                    7999,
                    &ed,
                    true,
                ),
            ),
            (
                "changed key",
                verify(
                    &[file(
                        home,
                        format!(
                            "# forge\ngit.example ssh-ed25519 {}\n",
                            STANDARD.encode(blob(7))
                        ),
                    )],
                    "git.example",
                    22,
                    &ed,
                    false,
                ),
            ),
            (
                "known by other types only",
                verify(
                    &[file(home, format!("git.example ssh-rsa {RSA}\n"))],
                    "git.example",
                    22,
                    &ed,
                    false,
                ),
            ),
            (
                "revoked",
                verify(
                    &[
                        file(home, format!("git.example ssh-rsa {RSA}\n")),
                        file(global, format!("@revoked * ssh-rsa {RSA}\n")),
                    ],
                    "git.example",
                    22,
                    &rsa,
                    false,
                ),
            ),
        ];
        let text: String = cases
            .iter()
            .map(|(what, r)| {
                format!(
                    "{what}:\n  {}\n",
                    r.clone().err().unwrap_or_else(|| "accepted".into())
                )
            })
            .collect();
        insta::assert_snapshot!(text);
    }

    proptest! {
        #[test]
        fn any_text_gives_a_verdict(text in "\\PC{0,200}", host in "[a-z.\\[\\]:0-9]{0,20}") {
            let _ = check(&text, &host, &blob(1));
        }

        #[test]
        fn any_key_bytes_are_refused_or_accepted_without_a_panic(key in proptest::collection::vec(any::<u8>(), 0..200)) {
            let files = [File { name: "kh".into(), text: format!("h ssh-ed25519 {ED}\n") }];
            let _ = plain_key(&key);
            prop_assert!(verify(&files, "h", 22, &key, true).is_err() || key == b64(ED));
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
