//! Who acts: the daemon's API tokens map to a user and groups (an identities file, tokens kept
//! only as SHA-256 digests and compared in constant time); the local command line acts as the
//! OS user, or as `--as NAME` where the identities file allows it. Approvers name users and
//! `group:NAME`s.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A person (or robot) acting, with the groups they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name, as history shows it.
    pub name: String,
    /// Their groups, as approvers name them after `group:`.
    pub groups: Vec<String>,
}

impl Identity {
    /// Whether this identity is among `approvers` (a user name or `group:NAME`); anyone is
    /// when the list is empty.
    pub fn may_approve(&self, approvers: &[String]) -> bool {
        approvers.is_empty()
            || approvers.iter().any(|a| match a.strip_prefix("group:") {
                Some(g) => self.groups.iter().any(|mine| mine == g),
                None => *a == self.name,
            })
    }
}

/// Why the identities file cannot be used, or an identity cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file cannot be read.
    #[error("cannot read the identities file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what it should be.
    #[error("{path}:{line}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u32,
        /// What is wrong and what to do.
        what: String,
    },
    /// `--as` without the file's leave.
    #[error(
        "acting as `{name}` needs `allowAs: true` in the identities file (KEELSON_IDENTITIES); without it the command line acts as the OS user"
    )]
    AsNotAllowed {
        /// Who was asked for.
        name: String,
    },
}

/// One user in the identities file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct User {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    token_sha256: Option<String>,
}

/// The identities file's top level.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    #[serde(default)]
    allow_as: bool,
    #[serde(default)]
    users: Vec<serde_json::Value>,
}

/// The identities an installation knows.
#[derive(Clone, Default)]
pub struct Identities {
    allow_as: bool,
    users: Vec<(Identity, Option<[u8; 32]>)>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digests of tokens are not for logs either.
        f.debug_struct("Identities")
            .field("allow_as", &self.allow_as)
            .field(
                "users",
                &self.users.iter().map(|(i, _)| &i.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A token's SHA-256 digest, as the identities file keeps it (`printf %s TOKEN | sha256sum`).
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A SHA-256 digest written as 64 hex digits.
pub fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Identities {
    /// Reads an identities file (YAML).
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of an identities file named `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, IdentityError> {
        let invalid = |line: u32, what: String| IdentityError::Invalid {
            path: path.to_path_buf(),
            line,
            what,
        };
        let docs = crate::load::yaml::parse(text).map_err(|e| invalid(e.pos.line, e.message))?;
        let Some(root) = docs.into_iter().find_map(|d| d.root) else {
            return Ok(Self::default());
        };
        let file: File = serde_json::from_value(root.to_json()).map_err(|e| {
            invalid(
                root.pos.line,
                format!("{e}; the file has `allowAs` and `users: [{{name, groups, tokenSha256}}]`"),
            )
        })?;
        let nodes: Vec<&crate::load::Node> = match root.get("users").map(|u| &u.kind) {
            Some(crate::load::NodeKind::Seq(items)) => items.iter().collect(),
            _ => Vec::new(),
        };
        let mut users = Vec::new();
        for (i, value) in file.users.into_iter().enumerate() {
            let line = nodes.get(i).map_or(root.pos.line, |n| n.pos.line);
            let u: User = serde_json::from_value(value).map_err(|e| {
                invalid(
                    line,
                    format!("{e}; a user has `name`, `groups` and `tokenSha256`"),
                )
            })?;
            let token = match &u.token_sha256 {
                Some(h) => Some(parse_digest(h).ok_or_else(|| {
                    invalid(
                        line,
                        format!(
                            "the tokenSha256 of `{}` is not 64 hex digits; write `printf %s TOKEN | sha256sum`'s digest, never the token",
                            u.name
                        ),
                    )
                })?),
                None => None,
            };
            users.push((
                Identity {
                    name: u.name,
                    groups: u.groups,
                },
                token,
            ));
        }
        Ok(Self {
            allow_as: file.allow_as,
            users,
        })
    }

    /// The identity whose token this is: every digest compared in constant time, so the
    /// answer's timing tells nothing about which one nearly matched.
    pub fn by_token(&self, token: &str) -> Option<Identity> {
        let d = digest(token);
        let mut found = None;
        for (who, known) in &self.users {
            if let Some(k) = known
                && bool::from(k.ct_eq(&d))
            {
                found = Some(who.clone());
            }
        }
        found
    }

    /// The digests of every user's token.
    pub fn digests(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        self.users.iter().filter_map(|(_, d)| *d)
    }

    /// Whether any user has a token: the API then takes tokens from this file.
    pub fn has_tokens(&self) -> bool {
        self.users.iter().any(|(_, t)| t.is_some())
    }

    /// A user by name, with their groups; a name the file does not list has no groups.
    pub fn named(&self, name: &str) -> Identity {
        self.users.iter().find(|(i, _)| i.name == name).map_or_else(
            || Identity {
                name: name.to_string(),
                groups: Vec::new(),
            },
            |(i, _)| i.clone(),
        )
    }

    /// Who the local command line acts as: `as_user` where the file allows it, else `os_user`.
    pub fn local(&self, os_user: &str, as_user: Option<&str>) -> Result<Identity, IdentityError> {
        match as_user {
            Some(name) if name != os_user && !self.allow_as => Err(IdentityError::AsNotAllowed {
                name: name.to_string(),
            }),
            Some(name) => Ok(self.named(name)),
            None => Ok(self.named(os_user)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Identities, IdentityError> {
        Identities::parse(Path::new("ids.yaml"), text)
    }

    #[test]
    fn tokens_map_to_users_and_groups_decide_approvals() {
        let alice = format!("{:x}", Sha256::digest(b"alice-token"));
        let ids = file(&format!(
            "users:\n  - name: alice\n    groups: [release-managers]\n    tokenSha256: {alice}\n  - name: bob\n"
        ))
        .unwrap();
        let a = ids.by_token("alice-token").unwrap();
        assert_eq!(a.name, "alice");
        assert!(ids.by_token("alice-token ").is_none());
        assert!(ids.by_token("").is_none());
        assert!(a.may_approve(&["group:release-managers".into()]));
        assert!(a.may_approve(&["alice".into()]));
        assert!(!a.may_approve(&["bob".into(), "group:qa-leads".into()]));
        let b = ids.named("bob");
        assert!(!b.may_approve(&["group:release-managers".into()]));
        assert!(b.may_approve(&[]));
    }

    #[test]
    fn acting_as_someone_else_needs_the_files_leave() {
        let ids = file("users: [{name: alice, groups: [qa-leads]}]\n").unwrap();
        assert_eq!(ids.local("carol", None).unwrap().name, "carol");
        assert!(matches!(
            ids.local("carol", Some("alice")),
            Err(IdentityError::AsNotAllowed { .. })
        ));
        let ids = file("allowAs: true\nusers: [{name: alice, groups: [qa-leads]}]\n").unwrap();
        assert_eq!(
            ids.local("carol", Some("alice")).unwrap().groups,
            ["qa-leads"]
        );
    }

    #[test]
    fn a_bad_file_names_its_line_and_never_echoes_a_token() {
        let err = file("users:\n  - name: alice\n  - name: bob\n    tokenSha256: secret-token\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ids.yaml:3:"), "{err}");
        assert!(!err.contains("secret-token"), "{err}");
        let err = file("users:\n  - name: alice\n    group: [x]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ids.yaml:2:") && err.contains("group"),
            "{err}"
        );
    }
}
