//! How the host reaches the agent in a container.
//!
//! `Socket` (the fast path): the agent listens on a unix socket in a host directory bind-mounted
//! into the container; a connection costs a `connect(2)`. `EngineExec` (the fallback, for engines
//! whose containers cannot share a socket with the host, such as gVisor without `--host-uds`): each
//! connection is a `docker exec` of `stockade-agent connect`, which bridges its stdin and stdout to
//! the agent's socket inside. Same protocol, same features, at the engine's exec latency.

use bollard::exec::{CreateExecOptions, StartExecResults};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use stockade_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::container::{AGENT_PATH, SOCKET_PATH};
use crate::engine::{short, Engine};

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Socket,
    EngineExec,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Socket => "socket",
            Transport::EngineExec => "engine-exec",
        }
    }
}

/// One connection to the agent in `container` over the engine's exec API.
pub async fn engine_exec_connection(engine: &Engine, container: &str) -> Result<DuplexStream> {
    let exec = engine
        .client
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec![AGENT_PATH.to_owned(), "connect".into(), SOCKET_PATH.into()]),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::backend(format!("exec in {container}"), short(&e)))?;
    let started = engine
        .client
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| Error::backend(format!("exec in {container}"), short(&e)))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return Err(Error::backend(
            format!("exec in {container}"),
            "the engine did not attach",
        ));
    };
    let (ours, theirs) = tokio::io::duplex(256 << 10);
    let (mut from_client, mut to_client) = tokio::io::split(theirs);
    // Agent → client: the exec's stdout; its stderr is the bridge's own complaints.
    tokio::spawn(async move {
        while let Some(Ok(chunk)) = output.next().await {
            if let bollard::container::LogOutput::StdOut { message } = chunk {
                if to_client.write_all(&message).await.is_err() {
                    return;
                }
            }
        }
        let _ = to_client.shutdown().await;
    });
    // Client → agent.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input.write_all(&buf[..n]).await.is_err() || input.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = input.shutdown().await;
    });
    Ok(ours)
}
