//! A throwaway PostgreSQL server (Debian's package), started by the tests (and the replicas
//! benchmark) that need one on a free port, with password authentication over TCP. `initdb` refuses root, so as root it runs
//! as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The password of the `postgres` role in these servers.
pub const PASSWORD: &str = "pg-s3cret-for-tests";

/// A running server; stopped (immediately) when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test.sh installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd` as the user that owns the data directory.
fn as_owner(bin: &Path, tool: &str) -> Command {
    if root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn check(c: &mut Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs openssl; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    check(
        Command::new("openssl").current_dir(dir).args(args),
        &format!("openssl {}", args.join(" ")),
    );
}

impl Postgres {
    /// Makes a cluster in a fresh directory and starts it.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that takes only TLS connections over TCP, with a certificate for `localhost`
    /// (and no other name) signed by a test authority, [`Postgres::ca`].
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The authority that signed a TLS server's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: bool) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("keelson-pg")
            .tempdir_in("/tmp")
            .unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, PASSWORD).unwrap();
        if root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        check(
            as_owner(&bin, "initdb")
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pw.display()))
                .arg("-D")
                .arg(dir.path().join("data")),
            "initdb",
        );
        if tls {
            let d = dir.path();
            let data = d.join("data");
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=keelson test authority",
                ],
            );
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            );
            std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "server.pem",
                    "-days",
                    "2",
                    "-extfile",
                    "san.ext",
                ],
            );
            for f in ["server.pem", "server.key"] {
                std::fs::copy(d.join(f), data.join(f)).unwrap();
            }
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            std::io::Write::write_all(
                &mut conf,
                b"ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n",
            )
            .unwrap();
            // TCP only with TLS: a connection without it finds no entry and is refused.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
            )
            .unwrap();
            if root() {
                check(
                    Command::new("chown")
                        .args(["-R", "postgres:postgres"])
                        .arg(&data),
                    "chown the data directory",
                );
            }
            check(
                Command::new("chmod")
                    .arg("600")
                    .arg(data.join("server.key")),
                "chmod the key",
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let pg = Self { dir, bin, port };
        pg.up();
        pg
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = as_owner(&self.bin, "pg_ctl");
        c.arg("-D").arg(self.dir.path().join("data")).args(args);
        c
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        check(
            &mut self.ctl(&["-w", "-o", &opts, "-l", &log.to_string_lossy(), "start"]),
            "pg_ctl start",
        );
    }

    /// Stops the server at once (connections are cut).
    pub fn down(&self) {
        check(&mut self.ctl(&["-w", "-m", "fast", "stop"]), "pg_ctl stop");
    }

    /// Freezes the server and every session (SIGSTOP): it accepts connections in the kernel
    /// and answers nothing, as a host that hangs or a network that drops packets.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Sends `sig` to the postmaster and its children (the sessions and workers).
    fn signal(&self, sig: i32) {
        let Ok(pid) = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")) else {
            return;
        };
        let Some(pid) = pid
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return;
        };
        let children = Command::new("pgrep")
            .args(["-P", &pid.to_string()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for p in std::iter::once(pid).chain(children.lines().filter_map(|l| l.trim().parse().ok()))
        {
            // SAFETY: kill has no memory preconditions; the pids are this test's server's.
            unsafe {
                libc::kill(p, sig);
            }
        }
    }

    /// Makes a database and answers its URL (without the password).
    pub fn database(&self, name: &str) -> String {
        check(
            as_owner(&self.bin, "psql")
                .args(["-h"])
                .arg(self.dir.path())
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-qc"])
                .arg(format!("CREATE DATABASE {name}")),
            "create the database",
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one query in `db` and answers its rows, `|`-separated.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = as_owner(&self.bin, "psql")
            .args(["-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-Atc",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A server left frozen by a failed test could not stop.
        self.thaw();
        let _ = self.ctl(&["-w", "-m", "immediate", "stop"]).output();
    }
}
