//! The host end of the guest agent's session: yamux over the virtio-serial port's chardev
//! socket, one yamux stream per agent connection. One task owns the session and drives it; the
//! rest of the supervisor asks it for new streams through a [`MuxHandle`].

use std::collections::VecDeque;
use std::task::Poll;

use stockade_core::{Error, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

type Opened = std::result::Result<yamux::Stream, String>;

/// Opens streams on the session; cheap to clone.
#[derive(Debug, Clone)]
pub struct MuxHandle {
    requests: mpsc::UnboundedSender<oneshot::Sender<Opened>>,
}

impl MuxHandle {
    /// A new stream to the guest's agent, as a tokio byte stream.
    pub async fn open(&self) -> Result<Compat<yamux::Stream>> {
        let (tx, rx) = oneshot::channel();
        let closed = || Error::backend("the guest's agent", "its session has ended (the VM stopped)");
        self.requests.send(tx).map_err(|_| closed())?;
        match rx.await {
            Ok(Ok(stream)) => Ok(stream.compat()),
            Ok(Err(e)) => Err(Error::backend("open a stream to the guest's agent", e)),
            Err(_) => Err(closed()),
        }
    }
}

/// Starts the session over `io` as its client. The task ends when the session does.
pub fn start<T>(io: T) -> (MuxHandle, tokio::task::JoinHandle<()>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let session = yamux::Connection::new(io.compat(), yamux::Config::default(), yamux::Mode::Client);
    (MuxHandle { requests: tx }, tokio::spawn(drive(session, rx)))
}

async fn drive<T>(
    mut session: yamux::Connection<T>,
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<Opened>>,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut waiting: VecDeque<oneshot::Sender<Opened>> = VecDeque::new();
    std::future::poll_fn(|cx| loop {
        while let Poll::Ready(Some(opener)) = requests.poll_recv(cx) {
            waiting.push_back(opener);
        }
        while !waiting.is_empty() {
            match session.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    if let Some(opener) = waiting.pop_front() {
                        let _ = opener.send(Ok(stream));
                    }
                }
                Poll::Ready(Err(e)) => {
                    for opener in waiting.drain(..) {
                        let _ = opener.send(Err(e.to_string()));
                    }
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        match session.poll_next_inbound(cx) {
            // The guest opens no streams of its own; one it did is dropped (and so reset).
            Poll::Ready(Some(Ok(_stream))) => continue,
            Poll::Ready(Some(Err(_)) | None) => {
                for opener in waiting.drain(..) {
                    let _ = opener.send(Err("the session ended".into()));
                }
                return Poll::Ready(());
            }
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}
