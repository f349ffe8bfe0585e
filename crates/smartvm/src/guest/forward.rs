//! Port forwarding: a host TCP listener whose connections each reach a guest port.

use std::net::SocketAddr;

use smartvm_guest_protocol::{Reply, Request};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{unexpected, GuestClient, GuestConnection, Session};
use crate::error::{GuestError, Result};

/// A running forward; dropping it (or [`stop`](PortForward::stop)) stops accepting. Connections
/// already relayed run to their end.
#[derive(Debug)]
pub struct PortForward {
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl PortForward {
    /// The host address connections are accepted on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting.
    pub fn stop(self) {}
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl GuestClient {
    /// Relays each connection accepted on `listener` to `127.0.0.1:guest_port` in the guest.
    pub fn forward(&self, listener: TcpListener, guest_port: u16) -> Result<PortForward> {
        let local = listener
            .local_addr()
            .map_err(|source| GuestError::Local { context: "the forward's listener".into(), source })?;
        let client = self.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let client = client.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.relay(tcp, guest_port).await {
                        tracing::debug!(error = %e, guest_port, "a forwarded connection failed");
                    }
                });
            }
        });
        Ok(PortForward { local, accepting })
    }

    /// One connection to `127.0.0.1:guest_port` in the guest, as a raw byte stream.
    pub async fn connect_port(&self, guest_port: u16) -> Result<GuestStream> {
        let session = self.open_forward(guest_port).await?;
        Ok(GuestStream { read: session.reader.into_inner(), write: session.writer.into_inner() })
    }

    async fn open_forward(&self, guest_port: u16) -> Result<Session> {
        let mut session = Session::open(self, &Request::Forward { port: guest_port }, "forward").await?;
        match session.reply().await? {
            Reply::Ready => Ok(session),
            other => Err(unexpected("forward", &other)),
        }
    }

    async fn relay(&self, mut tcp: TcpStream, guest_port: u16) -> Result<()> {
        let mut session = self.open_forward(guest_port).await?;
        let (mut tcp_read, mut tcp_write) = tcp.split();
        let mut guest_read = session.reader.into_inner();
        let guest_write = session.writer.get_mut();
        tokio::join!(pass(&mut tcp_read, guest_write), pass(&mut guest_read, &mut tcp_write));
        Ok(())
    }
}

/// One direction to its end, then the end passed on (half-close).
async fn pass(from: &mut (impl AsyncRead + Unpin), to: &mut (impl AsyncWrite + Unpin)) {
    let _ = tokio::io::copy(from, to).await;
    let _ = to.shutdown().await;
}

/// A raw byte stream to a guest port (from [`GuestClient::connect_port`]).
pub struct GuestStream {
    // Bytes the frame reader read ahead of `ready` are the port's first bytes: keep its buffer.
    read: BufReader<ReadHalf<GuestConnection>>,
    write: WriteHalf<GuestConnection>,
}

impl std::fmt::Debug for GuestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestStream").finish_non_exhaustive()
    }
}

impl AsyncRead for GuestStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuestStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}
