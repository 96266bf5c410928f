//! Postgres (`--db postgres://USER@HOST:PORT/DB`), through `tokio-postgres` without TLS (a
//! daemon and its database on one host or a private network; TLS is a next step).
//!
//! One connection behind an async mutex, as the SQLite store has one behind a plain one.
//! Migrations run at start under an advisory lock, recorded in `stockade_schema`.

use stockade_core::ExecEvent;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls, Row};

use super::{event_data, event_from_row, event_kind, token_hash, DbError, ExecRecord, Result, TokenInfo};

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE execs (
        id TEXT PRIMARY KEY,
        ord BIGSERIAL,
        sandbox_id TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL,
        pid BIGINT,
        exit TEXT,
        created_at BIGINT NOT NULL,
        finished_at BIGINT
     );
     CREATE INDEX execs_by_sandbox ON execs(sandbox_id, created_at);
     CREATE TABLE exec_events (
        exec_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        kind TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (exec_id, seq)
     );
     CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
     );
     CREATE TABLE idle_timeouts (
        sandbox_id TEXT PRIMARY KEY,
        idle_secs BIGINT NOT NULL,
        last_active BIGINT NOT NULL
     );",
    "CREATE TABLE e2b_sandboxes (
        sandbox_id TEXT PRIMARY KEY,
        data TEXT NOT NULL
     );",
    "CREATE TABLE e2b_templates (
        name TEXT PRIMARY KEY,
        data TEXT NOT NULL
     );",
];

/// An arbitrary constant for `pg_advisory_xact_lock`: two daemons starting at once migrate one
/// after the other.
const MIGRATION_LOCK: i64 = 0x5354_4b44_4200;

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

pub struct PostgresDb {
    client: Mutex<Client>,
}

impl std::fmt::Debug for PostgresDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresDb")
    }
}

const EXEC_COLUMNS: &str = "id, sandbox_id, request, status, pid, exit, created_at, finished_at,
    (SELECT MAX(seq) FROM exec_events WHERE exec_id = execs.id)";

fn exec_from_row(row: &Row) -> Result<ExecRecord> {
    let request: String = row.try_get(2)?;
    let exit: Option<String> = row.try_get(5)?;
    Ok(ExecRecord {
        id: row.try_get(0)?,
        sandbox_id: row.try_get(1)?,
        request: serde_json::from_str(&request)?,
        status: super::parse_exec_status(row.try_get::<_, &str>(3)?),
        pid: row.try_get::<_, Option<i64>>(4)?.map(|p| p as u32),
        exit: exit.map(|e| serde_json::from_str(&e)).transpose()?,
        created_at: row.try_get::<_, i64>(6)? as u64,
        finished_at: row.try_get::<_, Option<i64>>(7)?.map(|t| t as u64),
        next_seq: row
            .try_get::<_, Option<i64>>(8)?
            .map(|s| s as u64 + 1)
            .unwrap_or(0),
    })
}

impl PostgresDb {
    /// Connects and runs the migrations the database lacks.
    pub async fn connect(url: &str) -> Result<PostgresDb> {
        let (mut client, connection) =
            tokio_postgres::connect(url, NoTls)
                .await
                .map_err(|source| DbError::PostgresConnect {
                    url: redact(url),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("postgres connection: {e}");
            }
        });
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS stockade_schema (version INTEGER NOT NULL)")
            .await?;
        let version: i64 = tx
            .query_one("SELECT COUNT(*) FROM stockade_schema", &[])
            .await?
            .try_get(0)?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(migration).await?;
            tx.execute(
                "INSERT INTO stockade_schema (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(PostgresDb {
            client: Mutex::new(client),
        })
    }

    async fn lock(&self) -> MutexGuard<'_, Client> {
        self.client.lock().await
    }

    pub async fn insert_exec(
        &self,
        id: &str,
        sandbox_id: &str,
        request: &serde_json::Value,
        now: u64,
    ) -> Result<()> {
        self.lock()
            .await
            .execute(
                "INSERT INTO execs (id, sandbox_id, request, status, created_at) VALUES ($1, $2, $3, 'running', $4)",
                &[&id, &sandbox_id, &serde_json::to_string(request)?, &(now as i64)],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_exec(&self, id: &str) -> Result<()> {
        let client = self.lock().await;
        client
            .execute("DELETE FROM exec_events WHERE exec_id = $1", &[&id])
            .await?;
        client.execute("DELETE FROM execs WHERE id = $1", &[&id]).await?;
        Ok(())
    }

    pub async fn append_events(&self, exec_id: &str, events: &[ExecEvent], now: u64) -> Result<()> {
        let mut client = self.lock().await;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare(
                "INSERT INTO exec_events (exec_id, seq, kind, data) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .await?;
        for event in events {
            let data = event_data(event)?;
            tx.execute(
                &insert,
                &[&exec_id, &(event.seq() as i64), &event_kind(event), &data],
            )
            .await?;
            match event {
                ExecEvent::Started { pid, .. } => {
                    tx.execute(
                        "UPDATE execs SET pid = $2 WHERE id = $1",
                        &[&exec_id, &i64::from(*pid)],
                    )
                    .await?;
                }
                ExecEvent::Exited { exit, .. } => {
                    tx.execute(
                        "UPDATE execs SET status = 'exited', exit = $2, finished_at = $3 WHERE id = $1",
                        &[&exec_id, &serde_json::to_string(exit)?, &(now as i64)],
                    )
                    .await?;
                }
                ExecEvent::Output { .. } => {}
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn mark_lost(&self, exec_id: &str, now: u64) -> Result<()> {
        self.lock()
            .await
            .execute(
                "UPDATE execs SET status = 'lost', finished_at = $2 WHERE id = $1 AND status = 'running'",
                &[&exec_id, &(now as i64)],
            )
            .await?;
        Ok(())
    }

    pub async fn events(&self, exec_id: &str, from_seq: u64, limit: usize) -> Result<Vec<ExecEvent>> {
        let rows = self
            .lock()
            .await
            .query(
                "SELECT seq, kind, data FROM exec_events WHERE exec_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                &[&exec_id, &(from_seq as i64), &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| event_from_row(r.try_get::<_, i64>(0)? as u64, r.try_get(1)?, r.try_get(2)?))
            .collect()
    }

    pub async fn exec(&self, exec_id: &str) -> Result<Option<ExecRecord>> {
        let row = self
            .lock()
            .await
            .query_opt(
                &format!("SELECT {EXEC_COLUMNS} FROM execs WHERE id = $1"),
                &[&exec_id],
            )
            .await?;
        row.as_ref().map(exec_from_row).transpose()
    }

    pub async fn execs(&self, sandbox_id: Option<&str>) -> Result<Vec<ExecRecord>> {
        let client = self.lock().await;
        let rows = match sandbox_id {
            Some(id) => {
                client
                    .query(
                        &format!(
                            "SELECT {EXEC_COLUMNS} FROM execs WHERE sandbox_id = $1 ORDER BY created_at, ord"
                        ),
                        &[&id],
                    )
                    .await?
            }
            None => {
                client
                    .query(
                        &format!(
                        "SELECT {EXEC_COLUMNS} FROM execs WHERE status = 'running' ORDER BY created_at, ord"
                    ),
                        &[],
                    )
                    .await?
            }
        };
        rows.iter().map(exec_from_row).collect()
    }

    pub async fn forget_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let client = self.lock().await;
        client
            .execute(
                "DELETE FROM exec_events WHERE exec_id IN (SELECT id FROM execs WHERE sandbox_id = $1)",
                &[&sandbox_id],
            )
            .await?;
        client
            .execute("DELETE FROM execs WHERE sandbox_id = $1", &[&sandbox_id])
            .await?;
        client
            .execute("DELETE FROM idle_timeouts WHERE sandbox_id = $1", &[&sandbox_id])
            .await?;
        client
            .execute("DELETE FROM e2b_sandboxes WHERE sandbox_id = $1", &[&sandbox_id])
            .await?;
        Ok(())
    }

    pub async fn put_e2b(&self, sandbox_id: &str, data: &str) -> Result<()> {
        self.lock()
            .await
            .execute(
                "INSERT INTO e2b_sandboxes (sandbox_id, data) VALUES ($1, $2)
                 ON CONFLICT (sandbox_id) DO UPDATE SET data = EXCLUDED.data",
                &[&sandbox_id, &data],
            )
            .await?;
        Ok(())
    }

    pub async fn e2b(&self, sandbox_id: &str) -> Result<Option<String>> {
        let row = self
            .lock()
            .await
            .query_opt(
                "SELECT data FROM e2b_sandboxes WHERE sandbox_id = $1",
                &[&sandbox_id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn put_template(&self, name: &str, data: &str) -> Result<()> {
        self.lock()
            .await
            .execute(
                "INSERT INTO e2b_templates (name, data) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data",
                &[&name, &data],
            )
            .await?;
        Ok(())
    }

    pub async fn templates(&self) -> Result<Vec<String>> {
        let rows = self
            .lock()
            .await
            .query("SELECT data FROM e2b_templates ORDER BY name", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn remove_template(&self, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .await
            .execute("DELETE FROM e2b_templates WHERE name = $1", &[&name])
            .await?
            > 0)
    }

    pub async fn all_e2b(&self) -> Result<Vec<(String, String)>> {
        let rows = self
            .lock()
            .await
            .query("SELECT sandbox_id, data FROM e2b_sandboxes", &[])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn prune_output(&self, before: u64) -> Result<usize> {
        Ok(self
            .lock()
            .await
            .execute(
                "DELETE FROM exec_events WHERE exec_id IN
                    (SELECT id FROM execs WHERE status != 'running' AND finished_at < $1)",
                &[&(before as i64)],
            )
            .await? as usize)
    }

    pub async fn set_idle_timeout(&self, sandbox_id: &str, idle_secs: u64, now: u64) -> Result<()> {
        self.lock()
            .await
            .execute(
                "INSERT INTO idle_timeouts (sandbox_id, idle_secs, last_active) VALUES ($1, $2, $3)
                 ON CONFLICT (sandbox_id) DO UPDATE SET idle_secs = EXCLUDED.idle_secs, last_active = EXCLUDED.last_active",
                &[&sandbox_id, &(idle_secs as i64), &(now as i64)],
            )
            .await?;
        Ok(())
    }

    pub async fn touch(&self, sandbox_id: &str, now: u64) -> Result<()> {
        self.lock()
            .await
            .execute(
                "UPDATE idle_timeouts SET last_active = $2 WHERE sandbox_id = $1",
                &[&sandbox_id, &(now as i64)],
            )
            .await?;
        Ok(())
    }

    pub async fn idle_sandboxes(&self, now: u64) -> Result<Vec<String>> {
        let rows = self
            .lock()
            .await
            .query(
                "SELECT sandbox_id FROM idle_timeouts t WHERE last_active + idle_secs < $1
                   AND NOT EXISTS (SELECT 1 FROM execs e WHERE e.sandbox_id = t.sandbox_id AND e.status = 'running')",
                &[&(now as i64)],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub async fn create_token(&self, id: &str, name: &str, token: &str, now: u64) -> Result<()> {
        self.lock()
            .await
            .execute(
                "INSERT INTO tokens (id, name, hash, created_at) VALUES ($1, $2, $3, $4)",
                &[&id, &name, &token_hash(token), &(now as i64)],
            )
            .await?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = self
            .lock()
            .await
            .query(
                "SELECT id, name, created_at FROM tokens ORDER BY created_at, id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    created_at: r.try_get::<_, i64>(2)? as u64,
                })
            })
            .collect()
    }

    pub async fn remove_token(&self, id_or_name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .await
            .execute("DELETE FROM tokens WHERE id = $1 OR name = $1", &[&id_or_name])
            .await?
            > 0)
    }

    pub async fn token_valid(&self, token: &str) -> Result<bool> {
        Ok(self
            .lock()
            .await
            .query_opt("SELECT 1 FROM tokens WHERE hash = $1", &[&token_hash(token)])
            .await?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }
}
