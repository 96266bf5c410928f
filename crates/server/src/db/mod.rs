//! The daemon's store: execs, their numbered output events, API tokens (hashed) and idle
//! timeouts. SQLite by default (`sqlite.rs`), Postgres with `--db postgres://...`
//! (`postgres.rs`); both run their migrations at start. Sandboxes themselves live in their
//! drivers' records, which outlive the daemon on their own. Secret values are never written here.

pub mod postgres;
pub mod sqlite;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stockade_core::{ExecEvent, ExecExit, OutputStream};

pub use postgres::PostgresDb;
pub use sqlite::SqliteDb;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database: {0}")]
    Json(#[from] serde_json::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres {url}: {source}")]
    PostgresConnect {
        url: String,
        source: tokio_postgres::Error,
    },
}

type Result<T> = std::result::Result<T, DbError>;

pub use stockade_api::{ExecRecord, ExecStatus};

/// The status stored as text.
pub(crate) fn parse_exec_status(s: &str) -> ExecStatus {
    match s {
        "running" => ExecStatus::Running,
        "exited" => ExecStatus::Exited,
        _ => ExecStatus::Lost,
    }
}

/// A token as `token ls` shows it (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub created_at: u64,
}

/// The hash a token is stored under.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn event_kind(event: &ExecEvent) -> &'static str {
    match event {
        ExecEvent::Started { .. } => "started",
        ExecEvent::Output {
            stream: OutputStream::Stdout,
            ..
        } => "stdout",
        ExecEvent::Output {
            stream: OutputStream::Stderr,
            ..
        } => "stderr",
        ExecEvent::Exited { .. } => "exited",
    }
}

/// What an event stores besides its kind: output bytes, the pid, or the exit as JSON.
pub(crate) fn event_data(event: &ExecEvent) -> Result<Vec<u8>> {
    Ok(match event {
        ExecEvent::Output { data, .. } => data.clone(),
        ExecEvent::Started { pid, .. } => pid.to_string().into_bytes(),
        ExecEvent::Exited { exit, .. } => serde_json::to_vec(exit)?,
    })
}

/// An event back from a stored row.
pub(crate) fn event_from_row(seq: u64, kind: &str, data: Vec<u8>) -> Result<ExecEvent> {
    Ok(match kind {
        "started" => ExecEvent::Started {
            seq,
            pid: String::from_utf8_lossy(&data).parse().unwrap_or(0),
        },
        "stdout" => ExecEvent::Output {
            seq,
            stream: OutputStream::Stdout,
            data,
        },
        "stderr" => ExecEvent::Output {
            seq,
            stream: OutputStream::Stderr,
            data,
        },
        _ => ExecEvent::Exited {
            seq,
            exit: serde_json::from_slice::<ExecExit>(&data)?,
        },
    })
}

/// The daemon's database: one of the two stores, with the same operations.
#[derive(Debug)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PostgresDb),
}

/// Calls the same method on whichever store this is.
macro_rules! both {
    ($self:ident, $db:ident => $call:expr) => {
        match $self {
            Db::Sqlite($db) => $call,
            Db::Postgres($db) => $call.await,
        }
    };
}

impl Db {
    /// Opens the database `url` names: `postgres://...` or a SQLite file path.
    pub async fn open(url: &str) -> Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Db::Postgres(PostgresDb::connect(url).await?));
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Db::Sqlite(SqliteDb::open(std::path::Path::new(path))?))
    }

    pub async fn insert_exec(
        &self,
        id: &str,
        sandbox_id: &str,
        request: &serde_json::Value,
        now: u64,
    ) -> Result<()> {
        both!(self, db => db.insert_exec(id, sandbox_id, request, now))
    }
    pub async fn delete_exec(&self, id: &str) -> Result<()> {
        both!(self, db => db.delete_exec(id))
    }
    pub async fn append_events(&self, exec_id: &str, events: &[ExecEvent], now: u64) -> Result<()> {
        both!(self, db => db.append_events(exec_id, events, now))
    }
    pub async fn mark_lost(&self, exec_id: &str, now: u64) -> Result<()> {
        both!(self, db => db.mark_lost(exec_id, now))
    }
    pub async fn events(&self, exec_id: &str, from_seq: u64, limit: usize) -> Result<Vec<ExecEvent>> {
        both!(self, db => db.events(exec_id, from_seq, limit))
    }
    pub async fn exec(&self, exec_id: &str) -> Result<Option<ExecRecord>> {
        both!(self, db => db.exec(exec_id))
    }
    pub async fn execs(&self, sandbox_id: Option<&str>) -> Result<Vec<ExecRecord>> {
        both!(self, db => db.execs(sandbox_id))
    }
    pub async fn forget_sandbox(&self, sandbox_id: &str) -> Result<()> {
        both!(self, db => db.forget_sandbox(sandbox_id))
    }
    pub async fn prune_output(&self, before: u64) -> Result<usize> {
        both!(self, db => db.prune_output(before))
    }
    pub async fn set_idle_timeout(&self, sandbox_id: &str, idle_secs: u64, now: u64) -> Result<()> {
        both!(self, db => db.set_idle_timeout(sandbox_id, idle_secs, now))
    }
    pub async fn touch(&self, sandbox_id: &str, now: u64) -> Result<()> {
        both!(self, db => db.touch(sandbox_id, now))
    }
    pub async fn idle_sandboxes(&self, now: u64) -> Result<Vec<String>> {
        both!(self, db => db.idle_sandboxes(now))
    }
    pub async fn create_token(&self, id: &str, name: &str, token: &str, now: u64) -> Result<()> {
        both!(self, db => db.create_token(id, name, token, now))
    }
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        both!(self, db => db.tokens())
    }
    pub async fn remove_token(&self, id_or_name: &str) -> Result<bool> {
        both!(self, db => db.remove_token(id_or_name))
    }
    pub async fn token_valid(&self, token: &str) -> Result<bool> {
        both!(self, db => db.token_valid(token))
    }
    /// Stores the E2B surface's record of a sandbox (JSON), replacing any.
    pub async fn put_e2b(&self, sandbox_id: &str, data: &str) -> Result<()> {
        both!(self, db => db.put_e2b(sandbox_id, data))
    }
    pub async fn e2b(&self, sandbox_id: &str) -> Result<Option<String>> {
        both!(self, db => db.e2b(sandbox_id))
    }
    /// Stores an E2B template (JSON) under its name, replacing any.
    pub async fn put_template(&self, name: &str, data: &str) -> Result<()> {
        both!(self, db => db.put_template(name, data))
    }
    /// Every registered E2B template (JSON), by name.
    pub async fn templates(&self) -> Result<Vec<String>> {
        both!(self, db => db.templates())
    }
    /// False when no template had the name.
    pub async fn remove_template(&self, name: &str) -> Result<bool> {
        both!(self, db => db.remove_template(name))
    }
    /// Every E2B record: (sandbox id, JSON).
    pub async fn all_e2b(&self) -> Result<Vec<(String, String)>> {
        both!(self, db => db.all_e2b())
    }
}
