//! SQLite in WAL mode (the default: `$STOCKADE_HOME/stockade.db`).
//!
//! One connection behind a mutex: every statement is short, and `synchronous=NORMAL` in WAL mode
//! means a commit is durable across a crash of the process (a `kill -9`) without an fsync each.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use stockade_core::ExecEvent;

use super::{event_data, event_from_row, event_kind, token_hash, DbError, ExecRecord, Result, TokenInfo};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE execs (
        id TEXT PRIMARY KEY,
        sandbox_id TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL,
        pid INTEGER,
        exit TEXT,
        created_at INTEGER NOT NULL,
        finished_at INTEGER
     );
     CREATE INDEX execs_by_sandbox ON execs(sandbox_id, created_at);
     CREATE TABLE exec_events (
        exec_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (exec_id, seq)
     ) WITHOUT ROWID;
     CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
     );
     CREATE TABLE idle_timeouts (
        sandbox_id TEXT PRIMARY KEY,
        idle_secs INTEGER NOT NULL,
        last_active INTEGER NOT NULL
     );",
    // The E2B surface's record of each sandbox it made or adopted (template, access token,
    // end time, metadata), as JSON.
    "CREATE TABLE e2b_sandboxes (
        sandbox_id TEXT PRIMARY KEY,
        data TEXT NOT NULL
     );",
    // Templates registered for the E2B surface (`stockade template add`), as JSON.
    "CREATE TABLE e2b_templates (
        name TEXT PRIMARY KEY,
        data TEXT NOT NULL
     );",
];

/// The daemon's database.
pub struct SqliteDb {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteDb")
    }
}

impl SqliteDb {
    /// Opens (creating) the database at `path` and runs the migrations it lacks.
    pub fn open(path: &Path) -> Result<SqliteDb> {
        let open_err = |source| DbError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(open_err)?;
        // The file holds exec output and token hashes: the owner's alone.
        #[allow(clippy::let_underscore_must_use)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(&format!(
                "BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(open_err)?;
        }
        Ok(SqliteDb {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert_exec(
        &self,
        id: &str,
        sandbox_id: &str,
        request: &serde_json::Value,
        now: u64,
    ) -> Result<()> {
        self.lock().execute(
            "INSERT INTO execs (id, sandbox_id, request, status, created_at) VALUES (?1, ?2, ?3, 'running', ?4)",
            params![id, sandbox_id, serde_json::to_string(request)?, now as i64],
        )?;
        Ok(())
    }

    pub fn delete_exec(&self, id: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute("DELETE FROM exec_events WHERE exec_id = ?1", params![id])?;
        conn.execute("DELETE FROM execs WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Stores events in one transaction; an `Exited` event also finishes the exec.
    pub fn append_events(&self, exec_id: &str, events: &[ExecEvent], now: u64) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO exec_events (exec_id, seq, kind, data) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for event in events {
                let data = event_data(event)?;
                insert.execute(params![exec_id, event.seq() as i64, event_kind(event), data])?;
                match event {
                    ExecEvent::Started { pid, .. } => {
                        tx.execute("UPDATE execs SET pid = ?2 WHERE id = ?1", params![exec_id, pid])?;
                    }
                    ExecEvent::Exited { exit, .. } => {
                        tx.execute(
                            "UPDATE execs SET status = 'exited', exit = ?2, finished_at = ?3 WHERE id = ?1",
                            params![exec_id, serde_json::to_string(exit)?, now as i64],
                        )?;
                    }
                    ExecEvent::Output { .. } => {}
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn mark_lost(&self, exec_id: &str, now: u64) -> Result<()> {
        self.lock().execute(
            "UPDATE execs SET status = 'lost', finished_at = ?2 WHERE id = ?1 AND status = 'running'",
            params![exec_id, now as i64],
        )?;
        Ok(())
    }

    /// Stored events of an exec from `from_seq` on, at most `limit`.
    pub fn events(&self, exec_id: &str, from_seq: u64, limit: usize) -> Result<Vec<ExecEvent>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, kind, data FROM exec_events WHERE exec_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![exec_id, from_seq as i64, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut events = Vec::new();
        for row in rows {
            let (seq, kind, data) = row?;
            events.push(event_from_row(seq, &kind, data)?);
        }
        Ok(events)
    }

    fn exec_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ExecRecord, String, Option<String>)> {
        Ok((
            ExecRecord {
                id: r.get(0)?,
                sandbox_id: r.get(1)?,
                request: serde_json::Value::Null,
                status: super::parse_exec_status(&r.get::<_, String>(3)?),
                pid: r.get(4)?,
                exit: None,
                created_at: r.get::<_, i64>(6)? as u64,
                finished_at: r.get::<_, Option<i64>>(7)?.map(|t| t as u64),
                next_seq: r.get::<_, Option<i64>>(8)?.map(|s| s as u64 + 1).unwrap_or(0),
            },
            r.get(2)?,
            r.get(5)?,
        ))
    }

    const EXEC_COLUMNS: &'static str = "id, sandbox_id, request, status, pid, exit, created_at, finished_at,
        (SELECT MAX(seq) FROM exec_events WHERE exec_id = execs.id)";

    fn finish_exec(row: (ExecRecord, String, Option<String>)) -> Result<ExecRecord> {
        let (mut exec, request, exit) = row;
        exec.request = serde_json::from_str(&request)?;
        exec.exit = exit.map(|e| serde_json::from_str(&e)).transpose()?;
        Ok(exec)
    }

    pub fn exec(&self, exec_id: &str) -> Result<Option<ExecRecord>> {
        let row = self
            .lock()
            .query_row(
                &format!("SELECT {} FROM execs WHERE id = ?1", Self::EXEC_COLUMNS),
                params![exec_id],
                Self::exec_from_row,
            )
            .optional()?;
        row.map(Self::finish_exec).transpose()
    }

    /// Execs of one sandbox (newest last), or every running exec when `sandbox_id` is `None`.
    pub fn execs(&self, sandbox_id: Option<&str>) -> Result<Vec<ExecRecord>> {
        let conn = self.lock();
        let rows: Vec<_> = match sandbox_id {
            Some(id) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {} FROM execs WHERE sandbox_id = ?1 ORDER BY created_at, rowid",
                    Self::EXEC_COLUMNS
                ))?;
                let rows = stmt.query_map(params![id], Self::exec_from_row)?;
                rows.collect::<rusqlite::Result<_>>()?
            }
            None => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {} FROM execs WHERE status = 'running' ORDER BY created_at, rowid",
                    Self::EXEC_COLUMNS
                ))?;
                let rows = stmt.query_map([], Self::exec_from_row)?;
                rows.collect::<rusqlite::Result<_>>()?
            }
        };
        drop(conn);
        rows.into_iter().map(Self::finish_exec).collect()
    }

    /// Forgets the execs of a destroyed sandbox.
    pub fn forget_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM exec_events WHERE exec_id IN (SELECT id FROM execs WHERE sandbox_id = ?1)",
            params![sandbox_id],
        )?;
        conn.execute("DELETE FROM execs WHERE sandbox_id = ?1", params![sandbox_id])?;
        conn.execute(
            "DELETE FROM idle_timeouts WHERE sandbox_id = ?1",
            params![sandbox_id],
        )?;
        conn.execute(
            "DELETE FROM e2b_sandboxes WHERE sandbox_id = ?1",
            params![sandbox_id],
        )?;
        Ok(())
    }

    pub fn put_e2b(&self, sandbox_id: &str, data: &str) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO e2b_sandboxes (sandbox_id, data) VALUES (?1, ?2)",
            params![sandbox_id, data],
        )?;
        Ok(())
    }

    pub fn e2b(&self, sandbox_id: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT data FROM e2b_sandboxes WHERE sandbox_id = ?1",
                params![sandbox_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn put_template(&self, name: &str, data: &str) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO e2b_templates (name, data) VALUES (?1, ?2)",
            params![name, data],
        )?;
        Ok(())
    }

    pub fn templates(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT data FROM e2b_templates ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn remove_template(&self, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .execute("DELETE FROM e2b_templates WHERE name = ?1", params![name])?
            > 0)
    }

    pub fn all_e2b(&self) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT sandbox_id, data FROM e2b_sandboxes")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Drops the output of execs that finished before `before` (unix seconds).
    pub fn prune_output(&self, before: u64) -> Result<usize> {
        Ok(self.lock().execute(
            "DELETE FROM exec_events WHERE exec_id IN
                (SELECT id FROM execs WHERE status != 'running' AND finished_at < ?1)",
            params![before as i64],
        )?)
    }

    pub fn set_idle_timeout(&self, sandbox_id: &str, idle_secs: u64, now: u64) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO idle_timeouts (sandbox_id, idle_secs, last_active) VALUES (?1, ?2, ?3)",
            params![sandbox_id, idle_secs as i64, now as i64],
        )?;
        Ok(())
    }

    pub fn touch(&self, sandbox_id: &str, now: u64) -> Result<()> {
        self.lock().execute(
            "UPDATE idle_timeouts SET last_active = ?2 WHERE sandbox_id = ?1",
            params![sandbox_id, now as i64],
        )?;
        Ok(())
    }

    /// Sandboxes idle past their timeout with no running exec.
    pub fn idle_sandboxes(&self, now: u64) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT sandbox_id FROM idle_timeouts t WHERE last_active + idle_secs < ?1
               AND NOT EXISTS (SELECT 1 FROM execs e WHERE e.sandbox_id = t.sandbox_id AND e.status = 'running')",
        )?;
        let rows = stmt.query_map(params![now as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn create_token(&self, id: &str, name: &str, token: &str, now: u64) -> Result<()> {
        self.lock().execute(
            "INSERT INTO tokens (id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, token_hash(token), now as i64],
        )?;
        Ok(())
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, name, created_at FROM tokens ORDER BY created_at, id")?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes a token by id or name; false when none matched.
    pub fn remove_token(&self, id_or_name: &str) -> Result<bool> {
        Ok(self.lock().execute(
            "DELETE FROM tokens WHERE id = ?1 OR name = ?1",
            params![id_or_name],
        )? > 0)
    }

    pub fn token_valid(&self, token: &str) -> Result<bool> {
        Ok(self
            .lock()
            .query_row(
                "SELECT 1 FROM tokens WHERE hash = ?1",
                params![token_hash(token)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_core::{ExecExit, OutputStream};

    #[test]
    fn events_round_trip_and_finish_the_exec() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("s.db")).unwrap();
        db.insert_exec("e", "s", &serde_json::json!({"argv": ["true"]}), 1)
            .unwrap();
        let events = vec![
            ExecEvent::Started { seq: 0, pid: 5 },
            ExecEvent::Output {
                seq: 1,
                stream: OutputStream::Stderr,
                data: vec![0, 255],
            },
            ExecEvent::Exited {
                seq: 2,
                exit: ExecExit {
                    code: Some(3),
                    ..Default::default()
                },
            },
        ];
        db.append_events("e", &events, 2).unwrap();
        assert_eq!(db.events("e", 0, 100).unwrap(), events);
        assert_eq!(db.events("e", 2, 100).unwrap(), events[2..]);
        let exec = db.exec("e").unwrap().unwrap();
        assert_eq!(exec.status, crate::db::ExecStatus::Exited);
        assert_eq!(exec.exit.unwrap().code, Some(3));
        assert_eq!(exec.next_seq, 3);
        assert_eq!(exec.pid, Some(5));
        // Reopening runs no migration twice.
        drop(db);
        let db = SqliteDb::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(db.execs(Some("s")).unwrap().len(), 1);
    }

    #[test]
    fn tokens_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let db = SqliteDb::open(&path).unwrap();
        db.create_token("t1", "ci", "stk_secret", 1).unwrap();
        assert!(db.token_valid("stk_secret").unwrap());
        assert!(!db.token_valid("stk_other").unwrap());
        drop(db);
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(10).any(|w| w == b"stk_secret"));
    }
}
