//! `copy_in` / `copy_out`: local files and directories into and out of the guest, as streamed
//! tar archives (packed and unpacked by the protocol crate, the same code as the agent's).

use std::ffi::OsStr;
use std::path::Path;

use smartvm_guest_protocol::archive::{pack, unpack, ArchiveError, ChannelReader, ChannelWriter, Copied};
use smartvm_guest_protocol::{OwnedFrame, Reply, Request, Stream};
use tokio::sync::mpsc;

use super::{protocol, reply_of, unexpected, GuestClient, Session};
use crate::error::{GuestError, Result};

/// Chunks in flight between the connection and the archive.
const IN_FLIGHT: usize = 4;

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    /// Archive bytes.
    pub bytes: u64,
    /// Files, directories and links.
    pub entries: u64,
}

impl GuestClient {
    /// Copies the local `source` (file or directory) into the existing guest directory
    /// `guest_dir`, named `name` there (default: its own name).
    pub async fn copy_in(&self, source: &Path, guest_dir: &str, name: Option<&OsStr>) -> Result<CopyReport> {
        std::fs::symlink_metadata(source).map_err(local(format!("cannot read {}", source.display())))?;
        let name = name.or(source.file_name()).unwrap_or(OsStr::new(".")).to_owned();
        let mut session = Session::open(self, &Request::CopyIn { dir: guest_dir.to_owned() }, "copy_in").await?;
        expect_ready(session.reply().await?, "copy_in")?;
        let (tx, mut rx) = mpsc::channel(IN_FLIGHT);
        let source = source.to_path_buf();
        let packing = tokio::task::spawn_blocking(move || pack(ChannelWriter::new(tx), &source, &name));
        while let Some(chunk) = rx.recv().await {
            if session.writer.data(Stream::Archive, &chunk).await.is_err() {
                // The agent stopped reading: its error reply says why.
                drop(rx);
                return Err(session
                    .reply()
                    .await
                    .err()
                    .unwrap_or_else(|| protocol("copy_in", "the agent stopped reading".into())));
            }
        }
        joined(packing.await, "copy_in")?;
        session.writer.end(Stream::Archive).await.map_err(local("the guest connection".into()))?;
        done(session.reply().await?, "copy_in")
    }

    /// Copies the guest `path` into the existing local directory `local_dir`, named `name` there
    /// (default: its name in the guest).
    pub async fn copy_out(&self, path: &str, local_dir: &Path, name: Option<&str>) -> Result<CopyReport> {
        let meta = std::fs::metadata(local_dir).map_err(local(format!("cannot use {}", local_dir.display())))?;
        if !meta.is_dir() {
            let error = std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory");
            return Err(local(format!("cannot copy into {}", local_dir.display()))(error));
        }
        let request = Request::CopyOut { path: path.to_owned(), name: name.map(str::to_owned) };
        let mut session = Session::open(self, &request, "copy_out").await?;
        expect_ready(session.reply().await?, "copy_out")?;
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let dir = local_dir.to_path_buf();
        let unpacking = tokio::task::spawn_blocking(move || unpack(ChannelReader::new(rx), &dir));
        loop {
            match session.reader.read_frame().await {
                Ok(Some(OwnedFrame::Data { stream: Stream::Archive, bytes })) if bytes.is_empty() => break,
                Ok(Some(OwnedFrame::Data { stream: Stream::Archive, bytes })) => {
                    if tx.send(bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Some(OwnedFrame::Message(body))) => return Err(unexpected_or_refused(&body)),
                Ok(Some(OwnedFrame::Data { stream, .. })) => {
                    return Err(protocol("copy_out", format!("{stream:?} data")))
                }
                Ok(None) => return Err(protocol("copy_out", "the archive ended without its end frame".into())),
                Err(e) => return Err(protocol("copy_out", e.to_string())),
            }
        }
        drop(tx);
        joined(unpacking.await, "copy_out")?;
        done(session.reply().await?, "copy_out")
    }
}

fn unexpected_or_refused(body: &[u8]) -> crate::SmartVmError {
    match reply_of("copy_out", body) {
        Ok(other) => unexpected("copy_out", &other),
        Err(e) => e,
    }
}

fn expect_ready(reply: Reply, operation: &'static str) -> Result<()> {
    match reply {
        Reply::Ready => Ok(()),
        other => Err(unexpected(operation, &other)),
    }
}

fn done(reply: Reply, operation: &'static str) -> Result<CopyReport> {
    match reply {
        Reply::Done { bytes, entries } => Ok(CopyReport { bytes, entries }),
        other => Err(unexpected(operation, &other)),
    }
}

fn local(context: String) -> impl FnOnce(std::io::Error) -> crate::SmartVmError {
    move |source| GuestError::Local { context, source }.into()
}

fn joined(
    result: std::result::Result<std::result::Result<Copied, ArchiveError>, tokio::task::JoinError>,
    operation: &str,
) -> Result<Copied> {
    match result {
        Ok(Ok(copied)) => Ok(copied),
        Ok(Err(e)) => Err(local(format!("{operation}: {e}"))(std::io::Error::other(e))),
        Err(e) => Err(local(format!("{operation}: the archive task failed"))(std::io::Error::other(e))),
    }
}
