//! A Git source: fetch a branch into a bare clone under the state directory, then read the
//! YAML blobs of the fetched commit straight from its tree (no checkout, so no race with files
//! changing on disk). Force-pushes are followed; a branch that disappears is reported and the
//! last good revision stays in force.

use std::path::{Path, PathBuf};

use git2::{
    Cred, FetchOptions, ObjectType, RemoteCallbacks, Repository, TreeWalkMode, TreeWalkResult,
};

use super::{MAX_FILE_BYTES, SourceFile, SourceSet};
use crate::diag::Diagnostic;

/// Credentials for a remote.
#[derive(Clone, Default)]
pub struct GitAuth {
    /// A token for https remotes (never logged).
    pub token: Option<String>,
    /// A private key file for ssh remotes.
    pub ssh_key: Option<PathBuf>,
    /// An OpenSSH `known_hosts` file that ssh remotes' host keys are checked against
    /// (without it, `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// Where specs come from in Git.
#[derive(Debug, Clone)]
pub struct GitSource {
    /// A local path, `file://`, `https://` or `ssh://` URL.
    pub url: String,
    /// The branch to follow.
    pub branch: String,
    /// A subdirectory of the repository holding the specs.
    pub path: Option<PathBuf>,
    /// Where the bare clone lives.
    pub dir: PathBuf,
    /// Credentials.
    pub auth: GitAuth,
}

/// Why fetching or reading failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Git itself failed (network, auth, corrupt repository).
    #[error("git: {0}")]
    Git(String),
    /// The branch is not on the remote (any more).
    #[error("branch `{0}` does not exist on the remote; keeping the last good revision")]
    BranchMissing(String),
}

fn err(e: &git2::Error) -> GitError {
    // libgit2's messages may quote the remote's URL, credentials and all.
    GitError::Git(crate::report::scrub_urls(e.message()))
}

impl GitSource {
    fn open(&self) -> Result<Repository, GitError> {
        match Repository::open_bare(&self.dir) {
            Ok(r) => Ok(r),
            Err(_) => {
                std::fs::create_dir_all(&self.dir).map_err(|e| {
                    GitError::Git(format!("cannot create {}: {e}", self.dir.display()))
                })?;
                Repository::init_bare(&self.dir).map_err(|e| err(&e))
            }
        }
    }

    /// Fetches the branch (incrementally after the first time) and returns its commit id.
    pub fn fetch(&self) -> Result<String, GitError> {
        let repo = self.open()?;
        let mut remote = repo.remote_anonymous(&self.url).map_err(|e| err(&e))?;
        let mut options = FetchOptions::new();
        let refusal = Refusal::default();
        options.remote_callbacks(self.callbacks(&remote, &refusal));
        // `+` follows force-pushes; pruning makes a deleted branch disappear locally too.
        let local = format!("refs/remotes/origin/{}", self.branch);
        let refspec = format!("+refs/heads/{}:{local}", self.branch);
        options.prune(git2::FetchPrune::On);
        if let Err(e) = remote.fetch(&[&refspec], Some(&mut options), None) {
            let m = e.message().to_lowercase();
            if m.contains("couldn't find remote ref")
                || m.contains("not found") && m.contains("ref")
            {
                let _ = repo.find_reference(&local).and_then(|mut r| r.delete());
                return Err(GitError::BranchMissing(self.branch.clone()));
            }
            return Err(refusal.explain(&e));
        }
        let reference = repo
            .find_reference(&local)
            .map_err(|_| GitError::BranchMissing(self.branch.clone()))?;
        let oid = reference
            .target()
            .ok_or_else(|| GitError::BranchMissing(self.branch.clone()))?;
        Ok(oid.to_string())
    }

    /// Callbacks for a fetch from `remote`, whose URL is the one in effect (after any
    /// `insteadOf` rewriting), so the host key is looked up on the port really used.
    fn callbacks(&self, remote: &git2::Remote<'_>, refusal: &Refusal) -> RemoteCallbacks<'static> {
        let url = remote.url().unwrap_or(&self.url);
        callbacks(self.auth.clone(), url, refusal.clone())
    }

    /// The YAML files of a commit (under `path`), with the same rules as a directory source.
    pub fn read(&self, commit: &str) -> Result<SourceSet, GitError> {
        let repo = self.open()?;
        let oid = git2::Oid::from_str(commit).map_err(|e| err(&e))?;
        read_commit(&repo, oid, self.path.as_deref())
    }

    /// Fetches extra refs (e.g. a pull request's head) into the bare clone; `(remote, local)`
    /// pairs, force-updated.
    pub fn fetch_refs(&self, refs: &[(String, String)]) -> Result<(), GitError> {
        let repo = self.open()?;
        let mut remote = repo.remote_anonymous(&self.url).map_err(|e| err(&e))?;
        let mut options = FetchOptions::new();
        let refusal = Refusal::default();
        options.remote_callbacks(self.callbacks(&remote, &refusal));
        let specs: Vec<String> = refs.iter().map(|(r, l)| format!("+{r}:{l}")).collect();
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        remote
            .fetch(&specs, Some(&mut options), None)
            .map_err(|e| refusal.explain(&e))
    }

    /// Whether the clone has this commit.
    pub fn has_commit(&self, commit: &str) -> bool {
        self.open()
            .is_ok_and(|r| git2::Oid::from_str(commit).is_ok_and(|oid| r.find_commit(oid).is_ok()))
    }
}

/// A commit of a working copy or bare repository, resolved from any revision Git understands
/// (`main`, `origin/main`, `HEAD~1`, a SHA).
#[derive(Debug, Clone)]
pub struct ResolvedRevision {
    /// The full commit id.
    pub commit: String,
    /// Where the specs live inside the repository (the part of `--repo` below its top).
    pub prefix: PathBuf,
    /// The files at that commit.
    pub files: SourceSet,
}

/// Reads the specs of `dir` (a directory inside a Git repository) as they are at `rev`.
pub fn read_revision(dir: &Path, rev: &str) -> Result<ResolvedRevision, GitError> {
    let repo = Repository::discover(dir).map_err(|e| {
        GitError::Git(format!(
            "`{}` is not inside a Git repository ({})",
            dir.display(),
            e.message()
        ))
    })?;
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| GitError::Git(format!("cannot resolve `{rev}`: {}", e.message())))?;
    // The specs may live in a subdirectory of the work tree (`--repo examples`).
    let top = repo
        .workdir()
        .or_else(|| repo.path().parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let prefix = abs(dir)
        .strip_prefix(abs(&top))
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let files = read_commit(&repo, commit.id(), Some(&prefix))?;
    Ok(ResolvedRevision {
        commit: commit.id().to_string(),
        prefix,
        files,
    })
}

/// Why the last host key was refused: libgit2 replaces the callback's error with its own
/// message, so the reason is kept here and put back by [`Refusal::explain`].
#[derive(Clone, Default)]
struct Refusal(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl Refusal {
    fn set(&self, why: String) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(why);
        }
    }

    /// The error to report for a failed fetch: the refusal's reason if there was one.
    fn explain(&self, e: &git2::Error) -> GitError {
        match self.0.lock().ok().and_then(|mut slot| slot.take()) {
            Some(why) => GitError::Git(crate::report::scrub_urls(&why)),
            None => err(e),
        }
    }
}

fn callbacks(auth: GitAuth, url: &str, refusal: Refusal) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    // Host keys are checked here rather than by libgit2, whose refusal ("invalid or unknown
    // remote ssh hostkey") says neither which key nor what to do, and which reads only
    // ~/.ssh/known_hosts.
    let known_hosts = auth.known_hosts.clone();
    let port = ssh_port(url);
    callbacks.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS (https): libgit2 checks the certificate chain itself.
            return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(key) = hostkey.hostkey() else {
            refusal.set(format!(
                "the ssh server {host} did not give its host key, so it cannot be checked"
            ));
            return Err(git2::Error::from_str("ssh host key refused"));
        };
        match check_host_key(known_hosts.as_deref(), host, port, key) {
            Ok(()) => Ok(git2::CertificateCheckStatus::CertificateOk),
            Err(why) => {
                // libgit2 overwrites this message anyway; the reason travels in `refusal`.
                refusal.set(why);
                Err(git2::Error::from_str("ssh host key refused"))
            }
        }
    });
    // libgit2 asks again after a refusal, up to 15 times; the same credentials would only be
    // refused again (and count against the forge's limits), so each is offered once.
    let (mut key_offered, mut token_offered) = (false, false);
    callbacks.credentials(move |_url, user, allowed| {
        if allowed.contains(git2::CredentialType::SSH_KEY)
            && let Some(key) = &auth.ssh_key
        {
            if key_offered {
                return Err(git2::Error::from_str(
                    "the remote refused the ssh key (--ssh-key): check that it is authorized to read this repository",
                ));
            }
            key_offered = true;
            return Cred::ssh_key(user.unwrap_or("git"), None, key, None);
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT)
            && let Some(t) = &auth.token
        {
            if token_offered {
                return Err(git2::Error::from_str(
                    "the remote refused the token (KEELSON_GIT_TOKEN or --git-token-file): check that it is valid and can read this repository",
                ));
            }
            token_offered = true;
            return Cred::userpass_plaintext("x-access-token", t);
        }
        Err(git2::Error::from_str(
            "no credentials configured for this remote (set KEELSON_GIT_TOKEN or --ssh-key)",
        ))
    });
    callbacks
}

/// The port of an ssh URL: `ssh://[user@]host[:port]/path`, the scp-like `[user@host:port]:path`,
/// or 22 (`user@host:path`).
fn ssh_port(url: &str) -> u16 {
    let host_port = match url.split_once("://") {
        Some((_, rest)) => {
            let authority = rest.split('/').next().unwrap_or_default();
            authority.rsplit_once('@').map_or(authority, |(_, h)| h)
        }
        // libgit2's scp-like form with a port: `[git@host:2222]:org/repo.git`.
        None => match url.strip_prefix('[').and_then(|r| r.split_once("]:")) {
            Some((inside, _)) => {
                let host_port = inside.rsplit_once('@').map_or(inside, |(_, h)| h);
                // An IPv6 literal has several colons and no port in this form.
                if host_port.matches(':').count() == 1 {
                    host_port
                } else {
                    return 22;
                }
            }
            None => return 22,
        },
    };
    // `[::1]:2222` or `host:2222`; a bare IPv6 literal in brackets has no port.
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// Checks an ssh server's host key against `--known-hosts`, else the files ssh reads
/// (`~/.ssh/known_hosts`, then `/etc/ssh/ssh_known_hosts`).
fn check_host_key(
    configured: Option<&Path>,
    host: &str,
    port: u16,
    key: &[u8],
) -> Result<(), String> {
    use super::known_hosts::{self, File};
    let files = match configured {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the known_hosts file {} (--known-hosts or KEELSON_SSH_KNOWN_HOSTS): {e}",
                    path.display()
                )
            })?;
            vec![File {
                name: path.display().to_string(),
                text,
            }]
        }
        None => {
            // A relative or empty HOME would resolve against the daemon's working directory.
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|h| h.is_absolute())
                .map(|h| h.join(".ssh/known_hosts"));
            home.into_iter()
                .chain([PathBuf::from("/etc/ssh/ssh_known_hosts")])
                .map(|path| File {
                    name: path.display().to_string(),
                    // A missing default file knows no hosts.
                    text: std::fs::read_to_string(&path).unwrap_or_default(),
                })
                .collect()
        }
    };
    known_hosts::verify(&files, host, port, key, configured.is_some())
}

/// The YAML files of a commit (under `path`), with the same rules as a directory source.
fn read_commit(
    repo: &Repository,
    oid: git2::Oid,
    path: Option<&Path>,
) -> Result<SourceSet, GitError> {
    let commit = oid.to_string();
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| err(&e))?;
    let tree = match path {
        Some(p) if !p.as_os_str().is_empty() => {
            let entry = tree.get_path(p).map_err(|_| {
                GitError::Git(format!("path `{}` does not exist at {commit}", p.display()))
            })?;
            repo.find_tree(entry.id()).map_err(|_| {
                GitError::Git(format!("`{}` is not a directory at {commit}", p.display()))
            })?
        }
        _ => tree,
    };
    let ignored: Vec<PathBuf> = tree
        .get_name(super::IGNORE_FILE)
        .and_then(|e| repo.find_blob(e.id()).ok())
        .map(|b| {
            String::from_utf8_lossy(b.content())
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| PathBuf::from(l.trim_start_matches('/').trim_end_matches('/')))
                .collect()
        })
        .unwrap_or_default();
    let mut set = SourceSet::default();
    tree.walk(TreeWalkMode::PreOrder, |root, entry| {
        let name = entry.name().unwrap_or("");
        let rel = Path::new(root).join(name);
        if ignored.iter().any(|i| rel.starts_with(i)) {
            return TreeWalkResult::Skip;
        }
        match entry.kind() {
            Some(ObjectType::Tree) => {
                if name.starts_with('.') || name == "target" || name == "node_modules" {
                    TreeWalkResult::Skip
                } else {
                    TreeWalkResult::Ok
                }
            }
            Some(ObjectType::Blob) if name.ends_with(".yaml") || name.ends_with(".yml") => {
                if entry.filemode() == 0o120_000 {
                    set.diagnostics.push(
                        Diagnostic::error(
                            "symlink-outside",
                            &rel,
                            "symlinks are not followed in Git sources",
                        )
                        .hint("commit the file itself instead of a symlink"),
                    );
                    return TreeWalkResult::Ok;
                }
                match repo.find_blob(entry.id()) {
                    Ok(b) if b.size() as u64 > MAX_FILE_BYTES => set.diagnostics.push(
                        Diagnostic::error(
                            "file-too-large",
                            &rel,
                            format!(
                                "file is {:.1} MiB; spec files may be at most {} MiB",
                                b.size() as f64 / 1048576.0,
                                MAX_FILE_BYTES / 1048576
                            ),
                        )
                        .hint("split it into several files"),
                    ),
                    Ok(b) => set.files.push(SourceFile {
                        path: rel,
                        bytes: b.content().to_vec(),
                    }),
                    Err(e) => set.diagnostics.push(Diagnostic::error(
                        "unreadable",
                        &rel,
                        format!("cannot read blob: {}", e.message()),
                    )),
                }
                TreeWalkResult::Ok
            }
            _ => TreeWalkResult::Ok,
        }
    })
    .map_err(|e| err(&e))?;
    set.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::ssh_port;

    #[test]
    fn ssh_ports_come_from_the_url() {
        assert_eq!(ssh_port("ssh://git@example.com:2222/org/repo.git"), 2222);
        assert_eq!(ssh_port("ssh://git@example.com/org/repo.git"), 22);
        assert_eq!(ssh_port("ssh://example.com:7999/repo"), 7999);
        assert_eq!(ssh_port("ssh://git@[::1]:2222/repo"), 2222);
        assert_eq!(ssh_port("ssh://git@[::1]/repo"), 22);
        assert_eq!(ssh_port("git@github.com:org/repo.git"), 22);
        assert_eq!(ssh_port("ssh://user:pa:ss@host:2200/repo"), 2200);
        assert_eq!(ssh_port("[git@example.com:2222]:org/repo.git"), 2222);
        assert_eq!(ssh_port("[example.com:2222]:org/repo.git"), 2222);
        assert_eq!(ssh_port("[::1]:repo"), 22);
        assert_eq!(ssh_port("git@[::1]:repo"), 22);
    }
}
