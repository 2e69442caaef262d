//! The embedded SQLite store: one file under the state directory, WAL, migrations by
//! `user_version`, every write in a transaction.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use std::collections::BTreeMap;

use super::{HistoryEntry, LockInfo, LockOutcome, Owner, Store, StoreError};
use crate::plan::{Approval, Deployed, Failure, Pin, Scope, Suspend, Veto};
use crate::spec::{AppName, EnvName};

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE locks (
        cluster TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        reason TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE suspends (
        id INTEGER PRIMARY KEY,
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
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        cluster TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL,
        who TEXT NOT NULL,
        revision TEXT NOT NULL,
        result TEXT NOT NULL
    );
    CREATE INDEX history_cluster ON history (cluster, id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 2: journals of rollouts, for rollbacks derived from what ran.
    "CREATE TABLE journal (
        cluster TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );",
    // 3: the store's identity, written on the clusters it manages, and the stores whose
    // clusters it took over.
    "INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));
    INSERT INTO meta (key, value) VALUES ('store_created', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
    CREATE TABLE adopted (
        store_id TEXT PRIMARY KEY,
        who TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    );",
    // 4: the key secret values are sealed under in spec hashes.
    "INSERT INTO meta (key, value) VALUES ('spec_key', lower(hex(randomblob(32))));",
    // 5: canary analyses and their measurements.
    "CREATE TABLE analyses (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        cluster TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX analyses_cluster ON analyses (cluster, seq);",
    // 6: delivery controls: pins, vetoes, what was live and healthy, failed rollouts and when
    // groups were disabled.
    "CREATE TABLE pins (
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
    CREATE TABLE deployed (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX deployed_cluster ON deployed (cluster, seq);
    CREATE TABLE failures (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster TEXT NOT NULL,
        at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX failures_cluster ON failures (cluster, seq);
    CREATE TABLE disabled (
        server_group TEXT PRIMARY KEY,
        cluster TEXT NOT NULL,
        since TEXT NOT NULL
    );",
    // 7: fencing epochs, kept apart from the locks (which are deleted when released) so that
    // they only grow; replicas seen alive.
    "ALTER TABLE locks ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE lock_epochs (cluster TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
    CREATE TABLE replicas (name TEXT PRIMARY KEY, seen_until TEXT NOT NULL);",
];

/// Records kept per cluster of what was live and healthy: enough to go back a long way.
const DEPLOYED_KEPT: i64 = 5;

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// A timestamp column. One that does not parse is an error, never a time long past: a lock or
/// a suspend read as expired would fail open.
fn ts(s: &str, column: usize) -> rusqlite::Result<jiff::Timestamp> {
    s.parse().map_err(|e: jiff::Error| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl SqliteStore {
    /// Opens (creating and migrating) `<dir>/keelson.db`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("keelson.db");
        let err = |what: &str, e: &dyn std::fmt::Display| StoreError::Db {
            path: path.display().to_string(),
            what: format!("{what}: {e}"),
            source: None,
        };
        let at = |what: &'static str| {
            let path = path.display().to_string();
            move |e: rusqlite::Error| StoreError::Db {
                path: path.clone(),
                what: what.into(),
                source: Some(Box::new(e)),
            }
        };
        crate::private::dir(dir).map_err(|e| StoreError::Db {
            path: path.display().to_string(),
            what: format!("cannot use {}", dir.display()),
            source: Some(Box::new(e)),
        })?;
        let mut conn = Connection::open(&path).map_err(at("cannot open the database"))?;
        // Only this user reads the store (SQLite gives its -wal and -shm files the same mode).
        crate::private::tighten(&path).map_err(|e| StoreError::Db {
            path: path.display().to_string(),
            what: "cannot make the database private".into(),
            source: Some(Box::new(e)),
        })?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(at("cannot set a busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(at("cannot use write-ahead logging"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(at("cannot set synchronous mode"))?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(at("cannot read the schema version"))?;
        if version > MIGRATIONS.len() {
            return Err(err(
                "the database is newer than this keelson",
                &format!(
                    "schema version {version}, this keelson knows {}; upgrade keelson",
                    MIGRATIONS.len()
                ),
            ));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(at("cannot migrate the schema"))?;
            tx.execute_batch(m)
                .map_err(at("cannot migrate the schema"))?;
            tx.pragma_update(None, "user_version", i + 1)
                .map_err(at("cannot migrate the schema"))?;
            tx.commit().map_err(at("cannot migrate the schema"))?;
        }
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Opens `<dir>/keelson.db` only to read it: a store this user may not write (a read-only
    /// mount, another user's file shared for reading) still answers `status` and `history`.
    /// No migration runs; a store older than this keelson is refused.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let path = dir.join("keelson.db");
        let failed = |what: &str, e: rusqlite::Error| StoreError::Db {
            path: path.display().to_string(),
            what: what.into(),
            source: Some(Box::new(e)),
        };
        if !path.exists() {
            return Err(StoreError::Db {
                path: path.display().to_string(),
                what: "there is no store to read".into(),
                source: None,
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let uri = |mode: &str| format!("file:{}?{mode}", path.display());
        // `mode=ro` reads a store in use; `immutable=1` one whose directory cannot be written
        // either (no WAL index can be made there).
        let conn = Connection::open_with_flags(uri("mode=ro"), flags)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))
                    .map(|_| c)
            })
            .or_else(|_| Connection::open_with_flags(uri("immutable=1"), flags))
            .map_err(|e| failed("cannot open the database to read it", e))?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| failed("cannot read the schema version", e))?;
        if version != MIGRATIONS.len() {
            return Err(StoreError::Db {
                path: path.display().to_string(),
                what: format!(
                    "schema version {version}, this keelson reads {} only; open it once where it can be written",
                    MIGRATIONS.len()
                ),
                source: None,
            });
        }
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn err(&self, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Db {
            path: self.path.display().to_string(),
            what: "a query failed".into(),
            source: Some(Box::new(e)),
        }
    }

    /// Rows of one JSON `body` column, read back.
    fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>, StoreError> {
        let bodies: Vec<String> = self.with(|c| {
            let mut st = c.prepare(sql)?;
            let rows = st.query_map(params, |r| r.get(0))?;
            rows.collect()
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(|e| self.err(e)))
            .collect()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.lock().map_err(|_| StoreError::Db {
            path: self.path.display().to_string(),
            what: "the store's lock is poisoned (a thread panicked holding it)".into(),
            source: None,
        })?;
        f(&mut c).map_err(|e| self.err(e))
    }
}

fn read_lock(row: &rusqlite::Row<'_>) -> rusqlite::Result<LockInfo> {
    let owner: String = row.get(1)?;
    Ok(LockInfo {
        cluster: row.get(0)?,
        owner: serde_json::from_str(&owner).unwrap_or(Owner {
            host: "?".into(),
            pid: 0,
            command: owner.clone(),
            token: owner,
        }),
        reason: row.get(2)?,
        acquired_at: ts(&row.get::<_, String>(3)?, 3)?,
        expires_at: ts(&row.get::<_, String>(4)?, 4)?,
        epoch: row.get::<_, i64>(5)?.try_into().unwrap_or(0),
    })
}

fn owner_dead_here(owner: &Owner, me: &Owner) -> bool {
    owner.host == me.host
        && owner.pid != me.pid
        && !crate::provider::local::agent::process::alive(owner.pid)
}

fn audit(tx: &rusqlite::Transaction<'_>, e: &HistoryEntry) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO history (at, cluster, action, detail, who, revision, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![e.at.to_string(), e.cluster, e.action, e.detail, e.who, e.revision, e.result],
    )?;
    Ok(())
}

fn ttl_end(now: jiff::Timestamp, ttl: Duration) -> jiff::Timestamp {
    now.checked_add(
        jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::from_secs(60)),
    )
    .unwrap_or(now)
}

impl Store for SqliteStore {
    fn acquire_lock(
        &self,
        cluster: &str,
        owner: &Owner,
        reason: &str,
        ttl: Duration,
        now: jiff::Timestamp,
    ) -> Result<LockOutcome, StoreError> {
        let owner_json = serde_json::to_string(owner).map_err(|e| self.err(e))?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = tx.query_row("SELECT cluster, owner, reason, acquired_at, expires_at, epoch FROM locks WHERE cluster = ?1", [cluster], read_lock).optional()?;
            let mut took_over = None;
            let mut epoch = None;
            if let Some(l) = current {
                let mine = l.owner.token == owner.token;
                if !mine && l.expires_at > now && !owner_dead_here(&l.owner, owner) {
                    return Ok(LockOutcome::Held(l));
                }
                if mine {
                    epoch = Some(l.epoch);
                } else {
                    audit(&tx, &super::audit::lock_takeover(cluster, &l, l.expires_at <= now, &owner.to_string(), now))?;
                    took_over = Some(l);
                }
            }
            let epoch: u64 = match epoch {
                Some(e) => e,
                None => tx.query_row(
                    "INSERT INTO lock_epochs (cluster, epoch) VALUES (?1, 1) ON CONFLICT (cluster) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
                    [cluster],
                    |r| r.get::<_, i64>(0),
                )?.try_into().unwrap_or(0),
            };
            tx.execute(
                "INSERT OR REPLACE INTO locks (cluster, owner, reason, acquired_at, expires_at, epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![cluster, owner_json, reason, now.to_string(), ttl_end(now, ttl).to_string(), i64::try_from(epoch).unwrap_or(i64::MAX)],
            )?;
            tx.commit()?;
            Ok(LockOutcome::Acquired { took_over, epoch })
        })
    }

    fn renew_lock(
        &self,
        cluster: &str,
        owner: &Owner,
        ttl: Duration,
        now: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        let owner_json = serde_json::to_string(owner).map_err(|e| self.err(e))?;
        self.with(|c| {
            Ok(c.execute(
                "UPDATE locks SET expires_at = ?3 WHERE cluster = ?1 AND owner = ?2",
                params![cluster, owner_json, ttl_end(now, ttl).to_string()],
            )? == 1)
        })
    }

    fn release_lock(&self, cluster: &str, owner: &Owner) -> Result<(), StoreError> {
        let owner_json = serde_json::to_string(owner).map_err(|e| self.err(e))?;
        self.with(|c| {
            c.execute(
                "DELETE FROM locks WHERE cluster = ?1 AND owner = ?2",
                params![cluster, owner_json],
            )
            .map(|_| ())
        })
    }

    fn force_release(
        &self,
        cluster: &str,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<LockInfo>, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = tx.query_row("SELECT cluster, owner, reason, acquired_at, expires_at, epoch FROM locks WHERE cluster = ?1", [cluster], read_lock).optional()?;
            if let Some(l) = &current {
                tx.execute("DELETE FROM locks WHERE cluster = ?1", [cluster])?;
                audit(&tx, &super::audit::lock_release(cluster, l, who, now))?;
            }
            tx.commit()?;
            Ok(current)
        })
    }

    fn locks(&self) -> Result<Vec<LockInfo>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT cluster, owner, reason, acquired_at, expires_at, epoch FROM locks ORDER BY cluster")?;
            let rows = st.query_map([], read_lock)?;
            rows.collect()
        })
    }

    fn suspend(&self, s: &Suspend, now: jiff::Timestamp) -> Result<(), StoreError> {
        let scope = serde_json::to_string(&s.scope).map_err(|e| self.err(e))?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO suspends (scope, who, reason, created_at, until) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![scope, s.who, s.reason, now.to_string(), s.until.map(|u| u.to_string())],
            )?;
            audit(&tx, &super::audit::suspend(s, now))?;
            tx.commit()
        })
    }

    fn resume(&self, scope: &Scope, who: &str, now: jiff::Timestamp) -> Result<usize, StoreError> {
        let scope_json = serde_json::to_string(scope).map_err(|e| self.err(e))?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE suspends SET resumed_at = ?2 WHERE scope = ?1 AND resumed_at IS NULL",
                params![scope_json, now.to_string()],
            )?;
            audit(&tx, &super::audit::resume(scope, n, who, now))?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn suspends(&self, now: jiff::Timestamp) -> Result<Vec<Suspend>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT scope, who, reason, until FROM suspends WHERE resumed_at IS NULL ORDER BY id")?;
            let rows = st.query_map([], |r| {
                let scope: String = r.get(0)?;
                let until: Option<String> = r.get(3)?;
                Ok((scope, r.get::<_, String>(1)?, r.get::<_, String>(2)?, until))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (scope, who, reason, until) = row?;
                // A suspend that cannot be read is an error, never "no suspend".
                let scope = serde_json::from_str::<Scope>(&scope).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
                })?;
                let until = until.map(|u| ts(&u, 3)).transpose()?;
                if until.is_none_or(|u| u > now) {
                    out.push(Suspend { scope, who, reason, until });
                }
            }
            Ok(out)
        })
    }

    fn approve(&self, a: &Approval, who: &str, now: jiff::Timestamp) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR REPLACE INTO approvals (environment, app, version, who, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.environment.as_str(), a.app.as_str(), a.version, who, now.to_string()],
            )?;
            audit(&tx, &super::audit::approve(a, who, now))?;
            tx.commit()
        })
    }

    fn approvals(&self) -> Result<Vec<Approval>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT environment, app, version FROM approvals")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (e, a, version) = row?;
                if let (Ok(environment), Ok(app)) =
                    (crate::spec::EnvName::new(e), crate::spec::AppName::new(a))
                {
                    out.push(Approval {
                        environment,
                        app,
                        version,
                    });
                }
            }
            Ok(out)
        })
    }

    fn record(&self, e: &HistoryEntry) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            audit(&tx, e)?;
            tx.commit()
        })
    }

    fn history(
        &self,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = self.with(|c| {
            let mut st = c.prepare("SELECT at, cluster, action, detail, who, revision, result FROM history ORDER BY id DESC")?;
            let rows = st.query_map([], |r| {
                Ok(HistoryEntry {
                    at: ts(&r.get::<_, String>(0)?, 0)?,
                    cluster: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                    who: r.get(4)?,
                    revision: r.get(5)?,
                    result: r.get(6)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
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

    fn journal(&self, cluster: &str) -> Result<Option<super::Journal>, StoreError> {
        let body: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT body FROM journal WHERE cluster = ?1",
                [cluster],
                |r| r.get(0),
            )
            .optional()
        })?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| self.err(e)))
            .transpose()
    }

    fn journals(&self) -> Result<Vec<super::Journal>, StoreError> {
        let bodies: Vec<String> = self.with(|c| {
            let mut st = c.prepare("SELECT body FROM journal ORDER BY cluster")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(|e| self.err(e)))
            .collect()
    }

    fn put_journal(&self, j: &super::Journal) -> Result<(), StoreError> {
        let body = serde_json::to_string(j).map_err(|e| self.err(e))?;
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO journal (cluster, body, updated_at) VALUES (?1, ?2, ?3)",
                params![j.cluster, body, crate::clock::now().to_string()],
            )
            .map(|_| ())
        })
    }

    fn clear_journal(&self, cluster: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM journal WHERE cluster = ?1", [cluster])
                .map(|_| ())
        })
    }

    fn put_analysis(&self, r: &super::AnalysisRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(r).map_err(|e| self.err(e))?;
        self.with(|c| {
            c.execute(
                "INSERT INTO analyses (id, cluster, updated_at, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, body = excluded.body",
                params![r.id, r.cluster, r.updated.to_string(), body],
            )
            .map(|_| ())
        })
    }

    fn analyses(
        &self,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<super::AnalysisRecord>, StoreError> {
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut st = c.prepare("SELECT cluster, body FROM analyses ORDER BY seq DESC")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        rows.into_iter()
            .filter(|(c, _)| {
                cluster.is_none_or(|sel| {
                    c == sel || super::parse_cluster(c).is_some_and(|id| id.matches(sel))
                })
            })
            .take(limit)
            // A row that does not parse is an error: a failed analysis read as nothing would
            // let its spec roll out again.
            .map(|(_, b)| serde_json::from_str(&b).map_err(|e| self.err(e)))
            .collect()
    }

    fn identity(&self) -> Result<super::StoreIdentity, StoreError> {
        let (id, created): (String, String) = self.with(|c| {
            c.query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'store_id'), (SELECT value FROM meta WHERE key = 'store_created')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        Ok(super::StoreIdentity {
            id,
            created: self.with(|_| ts(&created, 1))?,
        })
    }

    fn adopt(
        &self,
        store_id: &str,
        cluster: &str,
        who: &str,
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR REPLACE INTO adopted (store_id, who, reason, at) VALUES (?1, ?2, ?3, ?4)",
                params![store_id, who, reason, now.to_string()],
            )?;
            audit(&tx, &super::audit::adopt(store_id, cluster, who, reason, now))?;
            tx.commit()
        })
    }

    fn spec_key(&self) -> Result<crate::model::SpecKey, StoreError> {
        let hex: String = self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = 'spec_key'", [], |r| {
                r.get(0)
            })
        })?;
        super::parse_key(&hex).ok_or_else(|| StoreError::Db {
            path: self.path.display().to_string(),
            what: "the spec key in meta is not 64 hex digits".into(),
            source: None,
        })
    }

    fn adopted(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT store_id FROM adopted ORDER BY store_id")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    fn set_last_good_revision(&self, revision: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_good_revision', ?1)",
                [revision],
            )
            .map(|_| ())
        })
    }

    fn advance_last_good_revision(&self, from: Option<&str>, to: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now: Option<String> = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = 'last_good_revision'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let moved = now.as_deref() == from || now.as_deref() == Some(to);
            if moved {
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_good_revision', ?1)",
                    [to],
                )?;
            }
            tx.commit()?;
            Ok(moved)
        })
    }

    fn last_good_revision(&self) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM meta WHERE key = 'last_good_revision'",
                [],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn pin(&self, p: &Pin) -> Result<(), StoreError> {
        let body = serde_json::to_string(p).map_err(|e| self.err(e))?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR REPLACE INTO pins (environment, app, body) VALUES (?1, ?2, ?3)",
                params![p.environment.as_str(), p.app.as_str(), body],
            )?;
            audit(&tx, &super::audit::pin(p))?;
            tx.commit()
        })
    }

    fn unpin(
        &self,
        environment: &EnvName,
        app: &AppName,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<Pin>, StoreError> {
        let body: Option<String> = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let body: Option<String> = tx
                .query_row(
                    "DELETE FROM pins WHERE environment = ?1 AND app = ?2 RETURNING body",
                    params![environment.as_str(), app.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if body.is_some() {
                audit(&tx, &super::audit::unpin(environment, app, who, now))?;
            }
            tx.commit()?;
            Ok(body)
        })?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| self.err(e)))
            .transpose()
    }

    fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        self.bodies("SELECT body FROM pins ORDER BY environment, app", [])
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for p in &lapsed {
                // Only the very pin read: one made again meanwhile stays.
                let body = serde_json::to_string(p).unwrap_or_default();
                let n = tx.execute(
                    "DELETE FROM pins WHERE environment = ?1 AND app = ?2 AND body = ?3",
                    params![p.environment.as_str(), p.app.as_str(), body],
                )?;
                if n > 0 {
                    audit(&tx, &super::audit::pin_lapsed(p, now))?;
                }
            }
            tx.commit()
        })?;
        Ok(lapsed)
    }

    fn veto(&self, v: &Veto) -> Result<(), StoreError> {
        let body = serde_json::to_string(v).map_err(|e| self.err(e))?;
        let env = v.environment.as_ref().map_or("*", |e| e.as_str());
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR REPLACE INTO vetoes (app, version, environment, body) VALUES (?1, ?2, ?3, ?4)",
                params![v.app.as_str(), v.version, env, body],
            )?;
            audit(&tx, &super::audit::veto(v))?;
            tx.commit()
        })
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM vetoes WHERE app = ?1 AND version = ?2 AND environment = ?3",
                params![app.as_str(), version, env],
            )?;
            if n > 0 {
                audit(&tx, &super::audit::unveto(app, version, env, who, now))?;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    fn vetoes(&self) -> Result<Vec<Veto>, StoreError> {
        self.bodies(
            "SELECT body FROM vetoes ORDER BY app, version, environment",
            [],
        )
    }

    fn record_deployed(&self, d: &Deployed) -> Result<(), StoreError> {
        let cluster = d.cluster.to_string();
        let body = serde_json::to_string(d).map_err(|e| self.err(e))?;
        let newest: Option<(i64, String)> = self.with(|c| {
            c.query_row(
                "SELECT seq, body FROM deployed WHERE cluster = ?1 ORDER BY seq DESC LIMIT 1",
                params![cluster],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        let same = newest.as_ref().and_then(|(seq, b)| {
            let old: Deployed = serde_json::from_str(b).ok()?;
            (old.artifact == d.artifact && old.spec_hash == d.spec_hash && old.rest == d.rest)
                .then_some(*seq)
        });
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match same {
                Some(seq) => {
                    tx.execute(
                        "UPDATE deployed SET body = ?2 WHERE seq = ?1",
                        params![seq, body],
                    )?;
                }
                None => {
                    tx.execute(
                        "INSERT INTO deployed (cluster, body) VALUES (?1, ?2)",
                        params![cluster, body],
                    )?;
                    tx.execute(
                        "DELETE FROM deployed WHERE cluster = ?1 AND seq NOT IN (SELECT seq FROM deployed WHERE cluster = ?1 ORDER BY seq DESC LIMIT ?2)",
                        params![cluster, DEPLOYED_KEPT],
                    )?;
                }
            }
            tx.commit()
        })
    }

    fn deployed(&self) -> Result<Vec<Deployed>, StoreError> {
        self.bodies("SELECT body FROM deployed ORDER BY seq", [])
    }

    fn record_failure(&self, f: &Failure) -> Result<(), StoreError> {
        // Shown in plans, PR comments and the status: no credentials in URLs, and short.
        let f = Failure {
            error: crate::report::scrub_urls(&f.error)
                .chars()
                .take(500)
                .collect(),
            ..f.clone()
        };
        let body = serde_json::to_string(&f).map_err(|e| self.err(e))?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO failures (cluster, at, body) VALUES (?1, ?2, ?3)",
                params![f.cluster.to_string(), f.at.to_string(), body],
            )?;
            // Older than any window the guard looks at: forgotten.
            let old =
                f.at.checked_sub(jiff::SignedDuration::from_hours(8 * 24))
                    .unwrap_or(f.at);
            tx.execute(
                "DELETE FROM failures WHERE at < ?1",
                params![old.to_string()],
            )?;
            tx.commit()
        })
    }

    fn failures(&self, since: jiff::Timestamp) -> Result<Vec<Failure>, StoreError> {
        let all: Vec<Failure> = self.bodies("SELECT body FROM failures ORDER BY seq", [])?;
        Ok(all.into_iter().filter(|f| f.at >= since).collect())
    }

    fn clear_failures(
        &self,
        cluster: &str,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<usize, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM failures WHERE cluster = ?1", params![cluster])?;
            audit(&tx, &super::audit::retry(cluster, n, who, now))?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn note_disabled(
        &self,
        cluster: &str,
        disabled: &[String],
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let known: Vec<String> = {
                let mut st = tx.prepare("SELECT server_group FROM disabled WHERE cluster = ?1")?;
                let rows = st.query_map(params![cluster], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for k in known.iter().filter(|k| !disabled.contains(k)) {
                tx.execute("DELETE FROM disabled WHERE server_group = ?1", params![k])?;
            }
            for g in disabled.iter().filter(|g| !known.contains(g)) {
                tx.execute(
                    "INSERT OR IGNORE INTO disabled (server_group, cluster, since) VALUES (?1, ?2, ?3)",
                    params![g, cluster, now.to_string()],
                )?;
            }
            tx.commit()
        })
    }

    fn fenced(&self, fence: &super::Fence, write: super::Write<'_>) -> Result<(), StoreError> {
        // One process writes an SQLite store at a time per cluster (its lock), so reading the
        // epoch first is enough here; the server store checks it in the write's transaction.
        let current: i64 = self.with(|c| {
            c.query_row(
                "SELECT coalesce((SELECT epoch FROM lock_epochs WHERE cluster = ?1), 0)",
                [&fence.cluster],
                |r| r.get(0),
            )
        })?;
        let current = u64::try_from(current).unwrap_or(0);
        if current > fence.epoch {
            return Err(StoreError::Fenced {
                cluster: fence.cluster.clone(),
                epoch: fence.epoch,
                current,
            });
        }
        self.write(write, &fence.cluster)
    }

    fn raise_epoch(&self, cluster: &str, seen: u64) -> Result<u64, StoreError> {
        let seen = i64::try_from(seen).unwrap_or(i64::MAX);
        let before: i64 = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before = tx.query_row(
                "SELECT coalesce((SELECT epoch FROM lock_epochs WHERE cluster = ?1), 0)",
                [cluster],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO lock_epochs (cluster, epoch) VALUES (?1, ?2) ON CONFLICT (cluster) DO UPDATE SET epoch = max(epoch, excluded.epoch)",
                params![cluster, seen],
            )?;
            tx.commit()?;
            Ok(before)
        })?;
        Ok(u64::try_from(before).unwrap_or(0))
    }

    fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<usize, StoreError> {
        let now = crate::clock::now();
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO replicas (name, seen_until) VALUES (?1, ?2)",
                params![replica, ttl_end(now, ttl).to_string()],
            )?;
            // Compared as times: RFC 3339 text with and without fractions does not sort.
            let mut st = c.prepare("SELECT seen_until FROM replicas")?;
            let rows = st.query_map([], |r| ts(&r.get::<_, String>(0)?, 0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map(|seen| seen.iter().filter(|s| **s > now).count().max(1))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    fn disabled_since(&self) -> Result<BTreeMap<String, jiff::Timestamp>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT server_group, since FROM disabled")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, ts(&r.get::<_, String>(1)?, 1)?))
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32, token: &str) -> Owner {
        Owner {
            host: "h".into(),
            pid,
            command: "keelson apply".into(),
            token: token.into(),
        }
    }

    #[test]
    fn locks_are_exclusive_expire_and_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let me = Owner {
            pid: std::process::id(),
            ..owner(0, "a")
        };
        let other = Owner {
            pid: std::process::id(),
            ..owner(0, "b")
        };
        assert!(matches!(
            s.acquire_lock("dev/local/x", &me, "apply", Duration::from_secs(60), now)
                .unwrap(),
            LockOutcome::Acquired {
                took_over: None,
                ..
            }
        ));
        assert!(matches!(
            s.acquire_lock("dev/local/x", &other, "apply", Duration::from_secs(60), now)
                .unwrap(),
            LockOutcome::Held(_)
        ));
        let later = "2026-11-23T10:02:00Z".parse().unwrap();
        match s
            .acquire_lock(
                "dev/local/x",
                &other,
                "apply",
                Duration::from_secs(60),
                later,
            )
            .unwrap()
        {
            LockOutcome::Acquired {
                took_over: Some(l), ..
            } => assert_eq!(l.owner.token, "a"),
            o => panic!("{o:?}"),
        }
        assert!(
            !s.renew_lock("dev/local/x", &me, Duration::from_secs(60), later)
                .unwrap(),
            "no longer mine"
        );
        let h = s.history(Some("dev/local/x"), 10).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].action, "lock-takeover");
        // Reopening migrates nothing and keeps the data.
        drop(s);
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.locks().unwrap().len(), 1);
    }

    #[test]
    fn suspends_lapse_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let scope = Scope::Global;
        s.suspend(
            &Suspend {
                scope: scope.clone(),
                who: "alice".into(),
                reason: "incident".into(),
                until: Some("2026-11-23T11:00:00Z".parse().unwrap()),
            },
            now,
        )
        .unwrap();
        assert_eq!(s.suspends(now).unwrap().len(), 1);
        assert!(
            s.suspends("2026-11-23T12:00:00Z".parse().unwrap())
                .unwrap()
                .is_empty(),
            "lapsed"
        );
        assert_eq!(s.resume(&scope, "bob", now).unwrap(), 1);
        assert!(s.suspends(now).unwrap().is_empty());
    }
}
