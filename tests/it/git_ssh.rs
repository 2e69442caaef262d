//! Following a repository over ssh with a deploy key: a real OpenSSH server (`sshd`, started
//! for the test on a free port with its own host key) running `git-upload-pack`, as a forge's
//! ssh endpoint does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keelson::source::git::{GitAuth, GitSource};

use crate::support::bare_repo;

/// An sshd for one test; killed on drop, even when the test fails.
pub struct Sshd {
    child: Child,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    /// Its keys: `user_key` is the authorized deploy key.
    pub dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (scripts/test.sh installs openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts sshd accepting `user_key.pub` for the current user, and waits until it listens.
pub fn sshd(dir: &Path) -> Sshd {
    keygen(&dir.join("host_key"));
    keygen(&dir.join("user_key"));
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
    // Run as root, sshd wants its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_port();
    let d = dir.display();
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nUsePAM no\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n"
        ),
    )
    .unwrap();
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sshd is installed (scripts/test.sh installs openssh-server)");
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .unwrap();
    let server = Sshd {
        child,
        port,
        dir: dir.to_path_buf(),
    };
    // Its own word that it listens, so a port taken by someone else in between is not
    // mistaken for it.
    let mut server = server;
    let start = Instant::now();
    let log = || std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
    while !log().contains(&format!("Server listening on 127.0.0.1 port {port}")) {
        let exited = server.child.try_wait().ok().flatten();
        assert!(
            exited.is_none() && start.elapsed() < Duration::from_secs(10),
            "sshd did not start ({exited:?}): {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// The one line an error asks to add to a known_hosts file: what follows its last ": ".
pub fn line_to_add(error: &str) -> String {
    let line = error.rsplit(": ").next().unwrap_or_default();
    let line = line.split("; ").next().unwrap_or_default();
    format!("{line}\n")
}

/// What `ssh-keyscan -p PORT 127.0.0.1` prints (`-H`: with hashed names).
pub fn keyscan(port: u16, hash: bool) -> String {
    let mut cmd = Command::new("ssh-keyscan");
    if hash {
        cmd.arg("-H");
    }
    let out = cmd
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-keyscan runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The user the tests run as, whom sshd lets in with the test's key.
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn source(url: &str, dir: &Path, key: &Path, known_hosts: Option<&Path>) -> GitSource {
    GitSource {
        url: url.to_string(),
        branch: "main".into(),
        path: None,
        dir: dir.to_path_buf(),
        auth: GitAuth {
            token: None,
            ssh_key: Some(key.to_path_buf()),
            known_hosts: known_hosts.map(Path::to_path_buf),
        },
    }
}

/// Fetches on a blocking thread, giving up after 20 s.
fn fetch(src: GitSource) -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(src.fetch().map_err(|e| e.to_string())));
    rx.recv_timeout(Duration::from_secs(20))
        .expect("fetch gives up instead of asking again forever")
}

#[test]
fn a_private_repository_is_followed_over_ssh_with_a_deploy_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = sshd(dir.path());
    let (repo, commit) = bare_repo(dir.path(), "specs.git");
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        user(),
        server.port,
        repo.display()
    );
    let key = server.dir.join("user_key");

    // The first contact: the host is in no known_hosts file, so nothing is fetched and the
    // error gives the fingerprint and the line that trusts it.
    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let e = fetch(source(&url, &dir.path().join("a"), &key, Some(&empty))).unwrap_err();
    let fingerprint = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(server.dir.join("host_key.pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let name = format!("[127.0.0.1]:{}", server.port);
    let host_key = std::fs::read_to_string(server.dir.join("host_key.pub")).unwrap();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    assert!(
        e.contains(&format!(
            "the ssh host key of {name} (ssh-ed25519 {fingerprint}) is not in {}",
            empty.display()
        )) && e.ends_with(&format!(
            "add this line to {}: {name} {}",
            empty.display(),
            host_key.join(" ")
        )),
        "{e}"
    );
    assert!(
        !dir.path().join("a").join("FETCH_HEAD").exists(),
        "nothing was fetched"
    );

    // Trusted the way the error says: the branch is followed.
    std::fs::write(&empty, line_to_add(&e)).unwrap();
    let src = source(&url, &dir.path().join("b"), &key, Some(&empty));
    assert_eq!(fetch(src.clone()), Ok(commit.clone()));
    let files = src.read(&commit).unwrap();
    assert_eq!(files.files.len(), 1);
    assert_eq!(files.files[0].path, PathBuf::from("env.yaml"));

    // What `ssh-keyscan` writes works too, plain and hashed (`-H`, as ssh's HashKnownHosts).
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, keyscan(server.port, false)).unwrap();
    assert_eq!(
        fetch(source(&url, &dir.path().join("b1"), &key, Some(&known))),
        Ok(commit.clone())
    );
    let hashed = dir.path().join("hashed_known_hosts");
    let scanned = keyscan(server.port, true);
    assert!(scanned.starts_with("|1|"), "{scanned}");
    std::fs::write(&hashed, scanned).unwrap();
    let src = source(&url, &dir.path().join("b2"), &key, Some(&hashed));
    assert_eq!(fetch(src), Ok(commit.clone()));

    // The same name with another key (a changed or intercepted host) is refused, naming the line.
    let other = dir.path().join("other_key");
    keygen(&other);
    let other_key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_fields: Vec<&str> = other_key.split_whitespace().take(2).collect();
    let stale = dir.path().join("stale_known_hosts");
    std::fs::write(
        &stale,
        format!("# team hosts\n{name} {}\n", other_fields.join(" ")),
    )
    .unwrap();
    let e = fetch(source(&url, &dir.path().join("c"), &key, Some(&stale))).unwrap_err();
    assert!(
        e.contains(&format!("does not match line 2 of {}", stale.display())),
        "{e}"
    );

    // A deploy key the server does not accept: refused once, with what to check.
    let e = fetch(source(&url, &dir.path().join("d"), &other, Some(&known))).unwrap_err();
    assert!(
        e.contains("the remote refused the ssh key (--ssh-key)"),
        "{e}"
    );

    // A known_hosts file that cannot be read is named.
    let missing = dir.path().join("nope");
    let e = fetch(source(&url, &dir.path().join("e"), &key, Some(&missing))).unwrap_err();
    assert!(
        e.contains(&format!(
            "cannot read the known_hosts file {}",
            missing.display()
        )),
        "{e}"
    );
}
