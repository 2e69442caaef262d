//! The shared PostgreSQL store, for several replicas: the same data as the SQLite store, a
//! connection pool, statement timeouts, retries of serialisation failures, and cluster locks
//! taken and renewed on the database's clock with a fencing epoch.
//!
//! The `Store` trait is synchronous (SQLite answers in microseconds); this store runs its pool
//! on a runtime of its own, on its own thread, and waits for each answer. The client's futures
//! talk to their connections over channels, so they can be awaited from any thread.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{
    AnalysisRecord, Fence, HistoryEntry, Journal, LockInfo, LockOutcome, Owner, Store, StoreError,
    StoreIdentity, Write, audit,
};
use crate::plan::{Approval, Deployed, Failure, Pin, Scope, Suspend, Veto};
use crate::spec::{AppName, EnvName};

/// Versioned schema; each runs once, in order, under an advisory lock so that replicas
/// starting together migrate once.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE locks (
        cluster TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        owner TEXT NOT NULL,
        reason TEXT NOT NULL,
        acquired_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        epoch BIGINT NOT NULL
    );
    CREATE TABLE suspends (
        id BIGSERIAL PRIMARY KEY,
        scope TEXT NOT NULL,
        who TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        until TEXT,
        resumed_at TEXT
    );
    CREATE TABLE approvals (
        environment TEXT NOT NULL,
        app TEXT NOT NULL,
        version TEXT NOT NULL,
        who TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (environment, app, version)
    );
    CREATE TABLE history (
        id BIGSERIAL PRIMARY KEY,
        at TEXT NOT NULL,
        cluster TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL,
        who TEXT NOT NULL,
        revision TEXT NOT NULL,
        result TEXT NOT NULL
    );
    CREATE INDEX history_cluster ON history (cluster, id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- gen_random_uuid() draws from a cryptographically strong generator.
    INSERT INTO meta (key, value) VALUES
        ('store_id', replace(gen_random_uuid()::text, '-', '')),
        ('store_created', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')),
        ('spec_key', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
    CREATE TABLE journal (cluster TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE TABLE adopted (
        store_id TEXT PRIMARY KEY,
        who TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE analyses (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        cluster TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX analyses_cluster ON analyses (cluster, seq);
    CREATE TABLE pins (
        environment TEXT NOT NULL,
        app TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (environment, app)
    );
    CREATE TABLE vetoes (
        app TEXT NOT NULL,
        version TEXT NOT NULL,
        environment TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (app, version, environment)
    );
    CREATE TABLE deployed (seq BIGSERIAL PRIMARY KEY, cluster TEXT NOT NULL, body TEXT NOT NULL);
    CREATE INDEX deployed_cluster ON deployed (cluster, seq);
    CREATE TABLE failures (
        seq BIGSERIAL PRIMARY KEY,
        cluster TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE disabled (server_group TEXT PRIMARY KEY, cluster TEXT NOT NULL, since TEXT NOT NULL);
    CREATE TABLE replicas (name TEXT PRIMARY KEY, seen_until TIMESTAMPTZ NOT NULL);
"];

/// Records kept per cluster of what was live and healthy (as the SQLite store).
const DEPLOYED_KEPT: i64 = 5;

/// Any one statement longer than this is cancelled by the server: a stuck query must not hold
/// a cluster's run past its lock.
const STATEMENT_TIMEOUT: &str = "5s";

/// How long a statement waits for a row another session holds.
const LOCK_WAIT: &str = "2s";

/// How long a session may sit in an open transaction doing nothing before the server ends it.
const IDLE_IN_TRANSACTION: &str = "3s";

/// How long to wait for a connection from the pool or to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long any one call to the store may take, retries included. The server's own timeouts
/// do not help when it cannot answer at all (frozen, cut off): then the caller gives up here.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `/readyz`'s ping waits: a probe must answer before its own timeout.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong inside, before it is worded for the caller.
#[derive(Debug, thiserror::Error)]
enum PgErr {
    #[error("no connection to the server")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("the query failed")]
    Db(#[from] tokio_postgres::Error),
    #[error("a stored record does not parse")]
    Json(#[from] serde_json::Error),
    #[error("a stored time does not parse")]
    Time(#[from] jiff::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("fenced")]
    Fenced {
        cluster: String,
        epoch: u64,
        current: u64,
    },
}

impl PgErr {
    /// Serialisation failures and deadlocks are retried; so is a connection that closed (the
    /// pool hands out a fresh one).
    fn retryable(&self) -> bool {
        match self {
            PgErr::Db(e) => {
                e.is_closed()
                    || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                    || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            }
            _ => false,
        }
    }
}

/// Runs `f` again (three times at most, with a short pause) while it fails in a way that a new
/// attempt can cure.
async fn retrying<T, F, Fut>(mut f: F) -> Result<T, PgErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PgErr>>,
{
    let mut tries = 0u32;
    loop {
        match f().await {
            Err(e) if e.retryable() && tries < 3 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25 << tries)).await;
            }
            r => return r,
        }
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server and database, without the password: what errors name.
    shown: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("shown", &self.shown)
            .finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether the server is on this host (a Unix socket, localhost or a loopback address), where
/// an unverified connection is no risk worth a warning.
fn on_this_host(cfg: &tokio_postgres::Config) -> bool {
    cfg.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

/// Where the server is, for messages: user, host, port, database and TLS mode, never the
/// password.
fn shown(cfg: &tokio_postgres::Config, mode: super::tls::SslMode) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let tls = match mode {
        super::tls::SslMode::Prefer => String::new(),
        m => format!("?sslmode={}", m.as_str()),
    };
    format!(
        "postgres://{}@{host}:{port}/{}{tls}",
        cfg.get_user().unwrap_or("?"),
        cfg.get_dbname().unwrap_or("")
    )
}

fn ts(s: &str) -> Result<jiff::Timestamp, PgErr> {
    Ok(s.parse()?)
}

fn epoch_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn lock_row(r: &Row) -> Result<LockInfo, PgErr> {
    let owner: String = r.try_get("owner")?;
    Ok(LockInfo {
        cluster: r.try_get("cluster")?,
        owner: serde_json::from_str(&owner)?,
        reason: r.try_get("reason")?,
        acquired_at: r.try_get("acquired_at")?,
        expires_at: r.try_get("expires_at")?,
        epoch: epoch_of(r.try_get("epoch")?),
    })
}

async fn audit_on(c: &impl GenericClient, e: &HistoryEntry) -> Result<(), PgErr> {
    c.execute(
        "INSERT INTO history (at, cluster, action, detail, who, revision, result) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&e.at.to_string(), &e.cluster, &e.action, &e.detail, &e.who, &e.revision, &e.result],
    )
    .await?;
    Ok(())
}

async fn put_journal_on(c: &impl GenericClient, j: &Journal) -> Result<(), PgErr> {
    let body = serde_json::to_string(j)?;
    c.execute(
        "INSERT INTO journal (cluster, body, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (cluster) DO UPDATE SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at",
        &[&j.cluster, &body, &crate::clock::now().to_string()],
    )
    .await?;
    Ok(())
}

async fn put_analysis_on(c: &impl GenericClient, r: &AnalysisRecord) -> Result<(), PgErr> {
    let body = serde_json::to_string(r)?;
    c.execute(
        "INSERT INTO analyses (id, cluster, updated_at, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at, body = EXCLUDED.body",
        &[&r.id, &r.cluster, &r.updated.to_string(), &body],
    )
    .await?;
    Ok(())
}

async fn record_deployed_on(c: &impl GenericClient, d: &Deployed) -> Result<(), PgErr> {
    let cluster = d.cluster.to_string();
    let body = serde_json::to_string(d)?;
    let newest = c
        .query_opt(
            "SELECT seq, body FROM deployed WHERE cluster = $1 ORDER BY seq DESC LIMIT 1",
            &[&cluster],
        )
        .await?;
    let same = match newest {
        Some(row) => {
            let old: Deployed = serde_json::from_str(row.try_get("body")?)?;
            (old.artifact == d.artifact && old.spec_hash == d.spec_hash && old.rest == d.rest)
                .then(|| row.try_get::<_, i64>("seq"))
                .transpose()?
        }
        None => None,
    };
    match same {
        Some(seq) => {
            c.execute(
                "UPDATE deployed SET body = $2 WHERE seq = $1",
                &[&seq, &body],
            )
            .await?;
        }
        None => {
            c.execute(
                "INSERT INTO deployed (cluster, body) VALUES ($1, $2)",
                &[&cluster, &body],
            )
            .await?;
            c.execute(
                "DELETE FROM deployed WHERE cluster = $1 AND seq NOT IN (SELECT seq FROM deployed WHERE cluster = $1 ORDER BY seq DESC LIMIT $2)",
                &[&cluster, &DEPLOYED_KEPT],
            )
            .await?;
        }
    }
    Ok(())
}

async fn record_failure_on(c: &impl GenericClient, f: &Failure) -> Result<(), PgErr> {
    // Shown in plans, PR comments and the status: no credentials in URLs, and short.
    let f = Failure {
        error: crate::report::scrub_urls(&f.error)
            .chars()
            .take(500)
            .collect(),
        ..f.clone()
    };
    let body = serde_json::to_string(&f)?;
    c.execute(
        "INSERT INTO failures (cluster, at, body) VALUES ($1, $2, $3)",
        &[&f.cluster.to_string(), &f.at, &body],
    )
    .await?;
    // Older than any window the guard looks at: forgotten.
    let old =
        f.at.checked_sub(jiff::SignedDuration::from_hours(8 * 24))
            .unwrap_or(f.at);
    c.execute("DELETE FROM failures WHERE at < $1", &[&old])
        .await?;
    Ok(())
}

async fn write_on(c: &impl GenericClient, w: Write<'_>, cluster: &str) -> Result<(), PgErr> {
    match w {
        Write::History(e) => audit_on(c, e).await,
        Write::Journal(j) => put_journal_on(c, j).await,
        Write::ClearJournal => {
            c.execute("DELETE FROM journal WHERE cluster = $1", &[&cluster])
                .await?;
            Ok(())
        }
        Write::Analysis(r) => put_analysis_on(c, r).await,
        Write::Deployed(d) => record_deployed_on(c, d).await,
        Write::Failure(f) => record_failure_on(c, f).await,
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), taking the password from
    /// `password` when given (a file or the environment, never the URL in logs), and migrates
    /// the schema.
    pub fn open(url: &str, password: Option<&str>) -> Result<Self, StoreError> {
        let tls_failed = |e: super::tls::TlsError| StoreError::Db {
            path: "postgres".into(),
            what: "its TLS settings (sslmode, sslrootcert) cannot be used".into(),
            source: Some(Box::new(e)),
        };
        let (url, tls) = super::tls::split(url).map_err(tls_failed)?;
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Db {
            path: "postgres".into(),
            what: "the store URL does not parse; write postgres://USER@HOST:PORT/DATABASE and give the password in KEELSON_STORE_PASSWORD_FILE".into(),
            source: Some(Box::new(e)),
        })?;
        if let Some(p) = password {
            cfg.password(p);
        }
        // A URL's TLS settings were taken out of it; any other string kept its own sslmode.
        let tls = match tls {
            Some(t) => {
                cfg.ssl_mode(t.driver_mode());
                t
            }
            None => super::tls::Tls::of_driver(cfg.get_ssl_mode()),
        };
        // As libpq does, no TLS over a Unix socket: the server offers none there, and the
        // socket never leaves this host.
        let sockets_only = !cfg.get_hosts().is_empty()
            && cfg
                .get_hosts()
                .iter()
                .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
        if sockets_only {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        let connector = tls.connector().map_err(tls_failed)?;
        // A replica paused in the middle of a transaction (SIGSTOP, a VM freeze) would hold
        // its row locks, and so the cluster's lock row, for ever: the server ends such a
        // session after a few seconds, and nobody waits long for a row.
        cfg.options(format!(
            "-c statement_timeout={STATEMENT_TIMEOUT} -c lock_timeout={LOCK_WAIT} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION}"
        ))
            .application_name("keelson")
            .connect_timeout(CONNECT_TIMEOUT)
            // A server gone without a word (a partition, a frozen host) is noticed by the
            // kernel on idle and busy connections alike, rather than after hours.
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(ANSWER_TIMEOUT);
        let shown = shown(&cfg, tls.mode);
        if !tls.verified() && !on_this_host(&cfg) {
            tracing::warn!(
                store = %shown,
                "the store's server is not verified: add sslmode=verify-full&sslrootcert=CA.pem to the store URL"
            );
        }
        let failed =
            |what: &str, e: Option<Box<dyn std::error::Error + Send + Sync>>| StoreError::Db {
                path: shown.clone(),
                what: what.into(),
                source: e,
            };
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("keelson-store".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("keelson-store-io")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async move {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| failed("cannot start the store's thread", Some(Box::new(e))))?;
        let handle = handle_rx
            .recv()
            .map_err(|e| failed("the store's thread ended", Some(Box::new(e))))?
            .map_err(|e| failed("cannot start the store's runtime", Some(Box::new(e))))?;
        let manager = Manager::from_config(
            cfg,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| failed("cannot make a connection pool", Some(Box::new(e))))?;
        let store = Self {
            pool,
            handle,
            stop: Some(stop),
            shown,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.run("cannot migrate the schema", async {
            let mut c = self.pool.get().await?;
            let tx = c.transaction().await?;
            // One replica migrates; the others wait here, then find nothing to do.
            tx.execute("SELECT pg_advisory_xact_lock(7346291)", &[])
                .await?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS keelson_schema (version INTEGER NOT NULL)")
                .await?;
            let version: i32 = tx
                .query_one("SELECT coalesce(max(version), 0) FROM keelson_schema", &[])
                .await?
                .try_get(0)?;
            let version = usize::try_from(version).unwrap_or(0);
            if version > MIGRATIONS.len() {
                return Ok(Some(version));
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
                tx.batch_execute(m).await?;
                let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
                tx.execute("INSERT INTO keelson_schema (version) VALUES ($1)", &[&v])
                    .await?;
            }
            tx.commit().await?;
            Ok(None)
        })
        .and_then(|newer| match newer {
            None => Ok(()),
            Some(v) => Err(StoreError::Db {
                path: self.shown.clone(),
                what: format!(
                    "the database is newer than this keelson (schema version {v}, this keelson knows {}); upgrade keelson",
                    MIGRATIONS.len()
                ),
                source: None,
            }),
        })
    }

    /// Waits for `f` on the store's runtime (entered, so that new connections are spawned
    /// there), from whatever thread calls.
    fn run<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, PgErr>>,
    ) -> Result<T, StoreError> {
        self.run_within(what, ANSWER_TIMEOUT, f)
    }

    /// [`PgStore::run`], giving up after `limit`. Called from a worker of a multi-threaded
    /// runtime (the daemon), the wait hands that worker's other tasks (lock renewals, the
    /// API, probes) to another thread first.
    fn run_within<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl Future<Output = Result<T, PgErr>>,
    ) -> Result<T, StoreError> {
        let wait = || {
            let _entered = self.handle.enter();
            // Unconstrained: called from inside a tokio task whose cooperative budget is
            // spent, tokio's own futures (the pool's semaphore) would answer Pending and wake
            // themselves for ever, for the task never yields to have its budget reset. The
            // timer is the store runtime's, which runs whatever the caller's does.
            futures::executor::block_on(tokio::task::unconstrained(async {
                tokio::time::timeout(limit, f)
                    .await
                    .unwrap_or(Err(PgErr::Timeout(limit)))
            }))
        };
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        answer.map_err(|e| match e {
            PgErr::Fenced {
                cluster,
                epoch,
                current,
            } => StoreError::Fenced {
                cluster,
                epoch,
                current,
            },
            e => StoreError::Db {
                path: self.shown.clone(),
                what: what.into(),
                source: Some(Box::new(e)),
            },
        })
    }

    /// Rows of one JSON `body` column, read back.
    fn bodies<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, StoreError> {
        self.run(
            "cannot read",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c.query(sql, &[]).await?;
                rows.iter()
                    .map(|r| Ok(serde_json::from_str(r.try_get("body")?)?))
                    .collect()
            }),
        )
    }

    /// One statement or transaction that writes, retried.
    fn exec(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.run(
            what,
            retrying(|| async move {
                let c = self.pool.get().await?;
                Ok(c.execute(sql, params).await?)
            }),
        )
    }
}

impl Store for PgStore {
    fn acquire_lock(
        &self,
        cluster: &str,
        owner: &Owner,
        reason: &str,
        ttl: Duration,
        _now: jiff::Timestamp,
    ) -> Result<LockOutcome, StoreError> {
        let owner_json = serde_json::to_string(owner).map_err(|e| StoreError::Db {
            path: self.shown.clone(),
            what: "cannot write the owner".into(),
            source: Some(Box::new(e)),
        })?;
        let (owner_json, secs) = (owner_json.as_str(), ttl.as_secs_f64());
        let outcome = self.run(
            "cannot take the lock",
            retrying(|| async move {
                let c = self.pool.get().await?;
                // Taken or renewed in one statement, on the database's clock: a new holder
                // only once the lock expired or was released, and then with the next epoch.
                let row = c
                    .query_one(
                        "WITH prev AS (
                            SELECT cluster, token, owner, reason, acquired_at, expires_at, epoch,
                                   expires_at <= now() AS expired
                            FROM locks WHERE cluster = $1
                         ), up AS (
                            INSERT INTO locks AS l (cluster, token, owner, reason, acquired_at, expires_at, epoch)
                            VALUES ($1, $2, $3, $4, now(), now() + make_interval(secs => $5), 1)
                            ON CONFLICT (cluster) DO UPDATE SET
                                token = EXCLUDED.token, owner = EXCLUDED.owner, reason = EXCLUDED.reason,
                                acquired_at = CASE WHEN l.token = EXCLUDED.token THEN l.acquired_at ELSE now() END,
                                expires_at = EXCLUDED.expires_at,
                                epoch = l.epoch + CASE WHEN l.token = EXCLUDED.token THEN 0 ELSE 1 END
                            WHERE l.token = EXCLUDED.token OR l.token = '' OR l.expires_at <= now()
                            RETURNING epoch
                         )
                         SELECT (SELECT epoch FROM up) AS new_epoch, prev.*
                         FROM (SELECT 1) AS one LEFT JOIN prev ON true",
                        &[&cluster, &owner.token, &owner_json, &reason, &secs],
                    )
                    .await?;
                let prev_token: Option<String> = row.try_get("token")?;
                let prev = match prev_token.as_deref() {
                    Some(t) if !t.is_empty() => {
                        Some((lock_row(&row)?, row.try_get::<_, bool>("expired")?))
                    }
                    _ => None,
                };
                match row.try_get::<_, Option<i64>>("new_epoch")? {
                    Some(epoch) => {
                        let took_over = match prev {
                            Some((l, expired)) if l.owner.token != owner.token => {
                                audit_on(
                                    &c,
                                    &audit::lock_takeover(cluster, &l, expired, &owner.to_string(), crate::clock::now()),
                                )
                                .await?;
                                Some(l)
                            }
                            _ => None,
                        };
                        Ok(LockOutcome::Acquired {
                            took_over,
                            epoch: epoch_of(epoch),
                        })
                    }
                    None => match prev {
                        Some((l, _)) => Ok(LockOutcome::Held(l)),
                        // Released between the two reads: try again.
                        None => Ok(LockOutcome::Held(LockInfo {
                            cluster: cluster.to_string(),
                            owner: owner.clone(),
                            reason: "changing hands".into(),
                            acquired_at: crate::clock::now(),
                            expires_at: crate::clock::now(),
                            epoch: 0,
                        })),
                    },
                }
            }),
        )?;
        // A holder on this host whose process is gone: taken over now rather than at expiry,
        // as the SQLite store does; only that very holding is replaced.
        if let LockOutcome::Held(l) = &outcome
            && l.owner.token != owner.token
            && super::owner_gone(&l.owner)
        {
            let prev_token = l.owner.token.as_str();
            let taken: Option<i64> = self.run(
                "cannot take over the lock",
                retrying(|| async move {
                    let c = self.pool.get().await?;
                    let row = c
                        .query_opt(
                            "UPDATE locks SET token = $3, owner = $4, reason = $5, acquired_at = now(),
                                 expires_at = now() + make_interval(secs => $6), epoch = epoch + 1
                             WHERE cluster = $1 AND token = $2
                             RETURNING epoch",
                            &[&cluster, &prev_token, &owner.token, &owner_json, &reason, &secs],
                        )
                        .await?;
                    Ok(row.map(|r| r.try_get(0)).transpose()?)
                }),
            )?;
            if let Some(epoch) = taken {
                let epoch = epoch_of(epoch);
                self.record(&audit::lock_takeover(
                    cluster,
                    l,
                    false,
                    &owner.to_string(),
                    crate::clock::now(),
                ))?;
                return Ok(LockOutcome::Acquired {
                    took_over: Some(l.clone()),
                    epoch,
                });
            }
        }
        Ok(outcome)
    }

    fn renew_lock(
        &self,
        cluster: &str,
        owner: &Owner,
        ttl: Duration,
        _now: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        // Only a lock that has not expired: once it has, another replica may hold it.
        let secs = ttl.as_secs_f64();
        self.exec(
            "cannot renew the lock",
            "UPDATE locks SET expires_at = now() + make_interval(secs => $3)
             WHERE cluster = $1 AND token = $2 AND expires_at > now()",
            &[&cluster, &owner.token, &secs],
        )
        .map(|n| n == 1)
    }

    fn release_lock(&self, cluster: &str, owner: &Owner) -> Result<(), StoreError> {
        // The row stays, with its epoch, so that epochs only grow.
        self.exec(
            "cannot release the lock",
            "UPDATE locks SET token = '', expires_at = now() WHERE cluster = $1 AND token = $2",
            &[&cluster, &owner.token],
        )
        .map(|_| ())
    }

    fn force_release(
        &self,
        cluster: &str,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<LockInfo>, StoreError> {
        self.run(
            "cannot release the lock",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                let row = tx
                    .query_opt(
                        "SELECT cluster, owner, reason, acquired_at, expires_at, epoch FROM locks
                         WHERE cluster = $1 AND token <> '' FOR UPDATE",
                        &[&cluster],
                    )
                    .await?;
                let current = row.as_ref().map(lock_row).transpose()?;
                if let Some(l) = &current {
                    tx.execute(
                        "UPDATE locks SET token = '', expires_at = now() WHERE cluster = $1",
                        &[&cluster],
                    )
                    .await?;
                    audit_on(&tx, &audit::lock_release(cluster, l, who, now)).await?;
                }
                tx.commit().await?;
                Ok(current)
            }),
        )
    }

    fn locks(&self) -> Result<Vec<LockInfo>, StoreError> {
        self.run(
            "cannot read the locks",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c
                    .query(
                        "SELECT cluster, owner, reason, acquired_at, expires_at, epoch FROM locks
                         WHERE token <> '' ORDER BY cluster",
                        &[],
                    )
                    .await?;
                rows.iter().map(lock_row).collect()
            }),
        )
    }

    fn suspend(&self, s: &Suspend, now: jiff::Timestamp) -> Result<(), StoreError> {
        self.run(
            "cannot suspend",
            retrying(|| async move {
                let scope = serde_json::to_string(&s.scope)?;
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO suspends (scope, who, reason, created_at, until) VALUES ($1, $2, $3, $4, $5)",
                    &[&scope, &s.who, &s.reason, &now.to_string(), &s.until.map(|u| u.to_string())],
                )
                .await?;
                audit_on(&tx, &audit::suspend(s, now)).await?;
                Ok(tx.commit().await?)
            }),
        )
    }

    fn resume(&self, scope: &Scope, who: &str, now: jiff::Timestamp) -> Result<usize, StoreError> {
        self.run(
            "cannot resume",
            retrying(|| async move {
                let scope_json = serde_json::to_string(scope)?;
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                let n = tx
                    .execute(
                        "UPDATE suspends SET resumed_at = $2 WHERE scope = $1 AND resumed_at IS NULL",
                        &[&scope_json, &now.to_string()],
                    )
                    .await?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                audit_on(&tx, &audit::resume(scope, n, who, now)).await?;
                tx.commit().await?;
                Ok(n)
            }),
        )
    }

    fn suspends(&self, now: jiff::Timestamp) -> Result<Vec<Suspend>, StoreError> {
        self.run(
            "cannot read the suspends",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c
                    .query(
                        "SELECT scope, who, reason, until FROM suspends WHERE resumed_at IS NULL ORDER BY id",
                        &[],
                    )
                    .await?;
                let mut out = Vec::new();
                for r in rows {
                    // A suspend that cannot be read is an error, never "no suspend".
                    let scope: Scope = serde_json::from_str(r.try_get("scope")?)?;
                    let until = r
                        .try_get::<_, Option<String>>("until")?
                        .map(|u| ts(&u))
                        .transpose()?;
                    if until.is_none_or(|u| u > now) {
                        out.push(Suspend {
                            scope,
                            who: r.try_get("who")?,
                            reason: r.try_get("reason")?,
                            until,
                        });
                    }
                }
                Ok(out)
            }),
        )
    }

    fn approve(&self, a: &Approval, who: &str, now: jiff::Timestamp) -> Result<(), StoreError> {
        self.run(
            "cannot approve",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO approvals (environment, app, version, who, at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (environment, app, version) DO UPDATE SET who = EXCLUDED.who, at = EXCLUDED.at",
                    &[&a.environment.as_str(), &a.app.as_str(), &a.version, &who, &now.to_string()],
                )
                .await?;
                audit_on(&tx, &audit::approve(a, who, now)).await?;
                Ok(tx.commit().await?)
            }),
        )
    }

    fn approvals(&self) -> Result<Vec<Approval>, StoreError> {
        let rows: Vec<(String, String, String)> = self.run(
            "cannot read the approvals",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c
                    .query("SELECT environment, app, version FROM approvals", &[])
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect()
            }),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(e, a, version)| {
                Some(Approval {
                    environment: EnvName::new(e).ok()?,
                    app: AppName::new(a).ok()?,
                    version,
                })
            })
            .collect())
    }

    fn record(&self, e: &HistoryEntry) -> Result<(), StoreError> {
        self.run(
            "cannot write the history",
            retrying(|| async move {
                let c = self.pool.get().await?;
                audit_on(&c, e).await
            }),
        )
    }

    fn history(
        &self,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows: Vec<HistoryEntry> = self.run(
            "cannot read the history",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c
                    .query(
                        "SELECT at, cluster, action, detail, who, revision, result FROM history ORDER BY id DESC",
                        &[],
                    )
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(HistoryEntry {
                            at: ts(r.try_get("at")?)?,
                            cluster: r.try_get("cluster")?,
                            action: r.try_get("action")?,
                            detail: r.try_get("detail")?,
                            who: r.try_get("who")?,
                            revision: r.try_get("revision")?,
                            result: r.try_get("result")?,
                        })
                    })
                    .collect()
            }),
        )?;
        let mut out: Vec<HistoryEntry> = rows
            .into_iter()
            .filter(|e| {
                cluster.is_none_or(|sel| {
                    super::parse_cluster(&e.cluster).is_some_and(|id| id.matches(sel))
                        || e.cluster == sel
                })
            })
            .take(limit)
            .collect();
        out.reverse();
        Ok(out)
    }

    fn journal(&self, cluster: &str) -> Result<Option<Journal>, StoreError> {
        self.run(
            "cannot read the journal",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let row = c
                    .query_opt("SELECT body FROM journal WHERE cluster = $1", &[&cluster])
                    .await?;
                row.map(|r| Ok(serde_json::from_str(r.try_get("body")?)?))
                    .transpose()
            }),
        )
    }

    fn journals(&self) -> Result<Vec<Journal>, StoreError> {
        self.bodies("SELECT body FROM journal ORDER BY cluster")
    }

    fn put_journal(&self, j: &Journal) -> Result<(), StoreError> {
        self.run(
            "cannot write the journal",
            retrying(|| async move {
                let c = self.pool.get().await?;
                put_journal_on(&c, j).await
            }),
        )
    }

    fn clear_journal(&self, cluster: &str) -> Result<(), StoreError> {
        self.exec(
            "cannot clear the journal",
            "DELETE FROM journal WHERE cluster = $1",
            &[&cluster],
        )
        .map(|_| ())
    }

    fn put_analysis(&self, r: &AnalysisRecord) -> Result<(), StoreError> {
        self.run(
            "cannot write the analysis",
            retrying(|| async move {
                let c = self.pool.get().await?;
                put_analysis_on(&c, r).await
            }),
        )
    }

    fn analyses(
        &self,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AnalysisRecord>, StoreError> {
        let rows: Vec<(String, String)> = self.run(
            "cannot read the analyses",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c
                    .query("SELECT cluster, body FROM analyses ORDER BY seq DESC", &[])
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            }),
        )?;
        rows.into_iter()
            .filter(|(c, _)| {
                cluster.is_none_or(|sel| {
                    c == sel || super::parse_cluster(c).is_some_and(|id| id.matches(sel))
                })
            })
            .take(limit)
            // A row that does not parse is an error: a failed analysis read as nothing would
            // let its spec roll out again.
            .map(|(_, b)| {
                serde_json::from_str(&b).map_err(|e| StoreError::Db {
                    path: self.shown.clone(),
                    what: "an analysis does not parse".into(),
                    source: Some(Box::new(e)),
                })
            })
            .collect()
    }

    fn identity(&self) -> Result<StoreIdentity, StoreError> {
        self.run(
            "cannot read the store's identity",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let row = c
                    .query_one(
                        "SELECT (SELECT value FROM meta WHERE key = 'store_id'), (SELECT value FROM meta WHERE key = 'store_created')",
                        &[],
                    )
                    .await?;
                Ok(StoreIdentity {
                    id: row.try_get(0)?,
                    created: ts(row.try_get(1)?)?,
                })
            }),
        )
    }

    fn adopt(
        &self,
        store_id: &str,
        cluster: &str,
        who: &str,
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        self.run(
            "cannot record the adoption",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO adopted (store_id, who, reason, at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (store_id) DO UPDATE SET who = EXCLUDED.who, reason = EXCLUDED.reason, at = EXCLUDED.at",
                    &[&store_id, &who, &reason, &now.to_string()],
                )
                .await?;
                audit_on(&tx, &audit::adopt(store_id, cluster, who, reason, now)).await?;
                Ok(tx.commit().await?)
            }),
        )
    }

    fn adopted(&self) -> Result<Vec<String>, StoreError> {
        self.run(
            "cannot read the adopted stores",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c
                    .query("SELECT store_id FROM adopted ORDER BY store_id", &[])
                    .await?;
                rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
            }),
        )
    }

    fn spec_key(&self) -> Result<crate::model::SpecKey, StoreError> {
        let hex: String = self.run(
            "cannot read the spec key",
            retrying(|| async move {
                let c = self.pool.get().await?;
                Ok(
                    c.query_one("SELECT value FROM meta WHERE key = 'spec_key'", &[])
                        .await?
                        .try_get(0)?,
                )
            }),
        )?;
        super::parse_key(&hex).ok_or_else(|| StoreError::Db {
            path: self.shown.clone(),
            what: "the spec key in meta is not 64 hex digits".into(),
            source: None,
        })
    }

    fn set_last_good_revision(&self, revision: &str) -> Result<(), StoreError> {
        self.exec(
            "cannot record the last good revision",
            "INSERT INTO meta (key, value) VALUES ('last_good_revision', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&revision],
        )
        .map(|_| ())
    }

    fn advance_last_good_revision(&self, from: Option<&str>, to: &str) -> Result<bool, StoreError> {
        self.run(
            "cannot record the last good revision",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let row = c
                    .query_opt(
                        "INSERT INTO meta (key, value) VALUES ('last_good_revision', $2)
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                         WHERE meta.value IS NOT DISTINCT FROM $1 OR meta.value = $2
                         RETURNING value",
                        &[&from, &to],
                    )
                    .await?;
                Ok(row.is_some())
            }),
        )
    }

    fn last_good_revision(&self) -> Result<Option<String>, StoreError> {
        self.run(
            "cannot read the last good revision",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let row = c
                    .query_opt(
                        "SELECT value FROM meta WHERE key = 'last_good_revision'",
                        &[],
                    )
                    .await?;
                row.map(|r| Ok(r.try_get(0)?)).transpose()
            }),
        )
    }

    fn pin(&self, p: &Pin) -> Result<(), StoreError> {
        self.run(
            "cannot pin",
            retrying(|| async move {
                let body = serde_json::to_string(p)?;
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO pins (environment, app, body) VALUES ($1, $2, $3)
                     ON CONFLICT (environment, app) DO UPDATE SET body = EXCLUDED.body",
                    &[&p.environment.as_str(), &p.app.as_str(), &body],
                )
                .await?;
                audit_on(&tx, &audit::pin(p)).await?;
                Ok(tx.commit().await?)
            }),
        )
    }

    fn unpin(
        &self,
        environment: &EnvName,
        app: &AppName,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<Pin>, StoreError> {
        self.run(
            "cannot unpin",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                let row = tx
                    .query_opt(
                        "DELETE FROM pins WHERE environment = $1 AND app = $2 RETURNING body",
                        &[&environment.as_str(), &app.as_str()],
                    )
                    .await?;
                let pin: Option<Pin> = row
                    .map(|r| -> Result<Pin, PgErr> {
                        Ok(serde_json::from_str(r.try_get("body")?)?)
                    })
                    .transpose()?;
                if pin.is_some() {
                    audit_on(&tx, &audit::unpin(environment, app, who, now)).await?;
                }
                tx.commit().await?;
                Ok(pin)
            }),
        )
    }

    fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        self.bodies("SELECT body FROM pins ORDER BY environment, app")
    }

    fn lapse_pins(&self, now: jiff::Timestamp) -> Result<Vec<Pin>, StoreError> {
        let lapsed: Vec<Pin> = self
            .pins()?
            .into_iter()
            .filter(|p| !p.in_force(now))
            .collect();
        if lapsed.is_empty() {
            return Ok(lapsed);
        }
        let lapsed_ref = &lapsed;
        self.run(
            "cannot lapse the pins",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                for p in lapsed_ref {
                    // Only the very pin read: one made again meanwhile stays.
                    let body = serde_json::to_string(p)?;
                    let n = tx
                        .execute(
                            "DELETE FROM pins WHERE environment = $1 AND app = $2 AND body = $3",
                            &[&p.environment.as_str(), &p.app.as_str(), &body],
                        )
                        .await?;
                    if n > 0 {
                        audit_on(&tx, &audit::pin_lapsed(p, now)).await?;
                    }
                }
                Ok(tx.commit().await?)
            }),
        )?;
        Ok(lapsed)
    }

    fn veto(&self, v: &Veto) -> Result<(), StoreError> {
        let env = v.environment.as_ref().map_or("*", |e| e.as_str());
        self.run(
            "cannot veto",
            retrying(|| async move {
                let body = serde_json::to_string(v)?;
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO vetoes (app, version, environment, body) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (app, version, environment) DO UPDATE SET body = EXCLUDED.body",
                    &[&v.app.as_str(), &v.version, &env, &body],
                )
                .await?;
                audit_on(&tx, &audit::veto(v)).await?;
                Ok(tx.commit().await?)
            }),
        )
    }

    fn unveto(
        &self,
        app: &AppName,
        version: &str,
        environment: Option<&EnvName>,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<usize, StoreError> {
        let env = environment.map_or("*", |e| e.as_str());
        self.run(
            "cannot lift the veto",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                let n = tx
                    .execute(
                        "DELETE FROM vetoes WHERE app = $1 AND version = $2 AND environment = $3",
                        &[&app.as_str(), &version, &env],
                    )
                    .await?;
                if n > 0 {
                    audit_on(&tx, &audit::unveto(app, version, env, who, now)).await?;
                }
                tx.commit().await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }),
        )
    }

    fn vetoes(&self) -> Result<Vec<Veto>, StoreError> {
        self.bodies("SELECT body FROM vetoes ORDER BY app, version, environment")
    }

    fn record_deployed(&self, d: &Deployed) -> Result<(), StoreError> {
        self.run(
            "cannot record what was deployed",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                record_deployed_on(&tx, d).await?;
                Ok(tx.commit().await?)
            }),
        )
    }

    fn deployed(&self) -> Result<Vec<Deployed>, StoreError> {
        self.bodies("SELECT body FROM deployed ORDER BY seq")
    }

    fn record_failure(&self, f: &Failure) -> Result<(), StoreError> {
        self.run(
            "cannot record the failure",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                record_failure_on(&tx, f).await?;
                Ok(tx.commit().await?)
            }),
        )
    }

    fn failures(&self, since: jiff::Timestamp) -> Result<Vec<Failure>, StoreError> {
        self.run(
            "cannot read the failures",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c
                    .query(
                        "SELECT body FROM failures WHERE at >= $1 ORDER BY seq",
                        &[&since],
                    )
                    .await?;
                rows.iter()
                    .map(|r| Ok(serde_json::from_str(r.try_get("body")?)?))
                    .collect()
            }),
        )
    }

    fn clear_failures(
        &self,
        cluster: &str,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<usize, StoreError> {
        self.run(
            "cannot forget the failures",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                let n = tx
                    .execute("DELETE FROM failures WHERE cluster = $1", &[&cluster])
                    .await?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                audit_on(&tx, &audit::retry(cluster, n, who, now)).await?;
                tx.commit().await?;
                Ok(n)
            }),
        )
    }

    fn note_disabled(
        &self,
        cluster: &str,
        disabled: &[String],
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        self.run(
            "cannot note disabled groups",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                let known: Vec<String> = tx
                    .query("SELECT server_group FROM disabled WHERE cluster = $1", &[&cluster])
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                for k in known.iter().filter(|k| !disabled.contains(k)) {
                    tx.execute("DELETE FROM disabled WHERE server_group = $1", &[k])
                        .await?;
                }
                for g in disabled.iter().filter(|g| !known.contains(g)) {
                    tx.execute(
                        "INSERT INTO disabled (server_group, cluster, since) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[g, &cluster, &now.to_string()],
                    )
                    .await?;
                }
                Ok(tx.commit().await?)
            }),
        )
    }

    fn disabled_since(&self) -> Result<BTreeMap<String, jiff::Timestamp>, StoreError> {
        self.run(
            "cannot read disabled groups",
            retrying(|| async move {
                let c = self.pool.get().await?;
                let rows = c
                    .query("SELECT server_group, since FROM disabled", &[])
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, ts(r.try_get(1)?)?)))
                    .collect()
            }),
        )
    }

    fn fenced(&self, fence: &Fence, write: Write<'_>) -> Result<(), StoreError> {
        self.run(
            "cannot write under the cluster's lock",
            retrying(|| async move {
                let mut c = self.pool.get().await?;
                let tx = c.transaction().await?;
                // The lock's row is held shared until the write commits: no new holder can
                // take it in between.
                let current: i64 = tx
                    .query_opt(
                        "SELECT epoch FROM locks WHERE cluster = $1 FOR SHARE",
                        &[&fence.cluster],
                    )
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .unwrap_or(0);
                let current = epoch_of(current);
                if current > fence.epoch {
                    return Err(PgErr::Fenced {
                        cluster: fence.cluster.clone(),
                        epoch: fence.epoch,
                        current,
                    });
                }
                write_on(&tx, write, &fence.cluster).await?;
                Ok(tx.commit().await?)
            }),
        )
    }

    fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<usize, StoreError> {
        let secs = ttl.as_secs_f64();
        self.run(
            "cannot say this replica is alive",
            retrying(|| async move {
                let c = self.pool.get().await?;
                c.execute(
                    "INSERT INTO replicas (name, seen_until) VALUES ($1, now() + make_interval(secs => $2))
                     ON CONFLICT (name) DO UPDATE SET seen_until = EXCLUDED.seen_until",
                    &[&replica, &secs],
                )
                .await?;
                let n: i64 = c
                    .query_one("SELECT count(*) FROM replicas WHERE seen_until > now()", &[])
                    .await?
                    .try_get(0)?;
                Ok(usize::try_from(n).unwrap_or(1).max(1))
            }),
        )
    }

    fn raise_epoch(&self, cluster: &str, seen: u64) -> Result<u64, StoreError> {
        let seen = i64::try_from(seen).unwrap_or(i64::MAX);
        self.run(
            "cannot raise the lock's epoch",
            retrying(|| async move {
                let c = self.pool.get().await?;
                // The row is there: the caller holds the lock.
                let row = c
                    .query_opt(
                        "WITH prev AS (SELECT epoch FROM locks WHERE cluster = $1 FOR UPDATE)
                         UPDATE locks SET epoch = GREATEST(locks.epoch, $2)
                         FROM prev WHERE locks.cluster = $1
                         RETURNING prev.epoch",
                        &[&cluster, &seen],
                    )
                    .await?;
                Ok(match row {
                    Some(r) => epoch_of(r.try_get(0)?),
                    None => 0,
                })
            }),
        )
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.run_within("the store does not answer", PING_TIMEOUT, async {
            let c = self.pool.get().await?;
            c.execute("SELECT 1", &[]).await?;
            Ok(())
        })
    }
}
