//! `copy_in` and `copy_out` over the connection (the archive format is the protocol crate's).

use std::ffi::OsString;

use smartvm_guest_protocol::archive::{pack, unpack, ArchiveError, ChannelReader, ChannelWriter};
use smartvm_guest_protocol::{GuestErrorCode, OwnedFrame, Reply, Stream};
use tokio::sync::mpsc;

use crate::op::{absolute, send, OpError, Reader, Writer};

/// Chunks in flight between the connection and the archive.
const IN_FLIGHT: usize = 4;

/// Unpacks the archive that follows into `dir`.
pub async fn copy_in(dir: &str, mut reader: Reader, writer: &mut Writer) -> Result<(), OpError> {
    let dir = absolute(dir)?.to_path_buf();
    let meta = std::fs::metadata(&dir).map_err(|e| OpError::io(e, dir.display()))?;
    if !meta.is_dir() {
        return Err(OpError::new(GuestErrorCode::InvalidArgument, format!("{} is not a directory", dir.display())));
    }
    send(writer, &Reply::Ready).await?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let unpacking = tokio::task::spawn_blocking(move || unpack(ChannelReader::new(rx), &dir));
    let mut bytes = 0u64;
    loop {
        match reader.read_frame().await {
            Ok(Some(OwnedFrame::Data { stream: Stream::Archive, bytes: chunk })) => {
                if chunk.is_empty() {
                    break;
                }
                bytes += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    // The unpacker stopped early: its error is the answer.
                    break;
                }
            }
            Ok(Some(_)) => return Err(OpError::new(GuestErrorCode::BadFrame, "copy_in expects archive data only")),
            Ok(None) => return Err(OpError::new(GuestErrorCode::Io, "the archive ended without its end frame")),
            Err(e) => return Err(OpError::read(&e)),
        }
    }
    drop(tx);
    let copied = joined(unpacking.await)?;
    send(writer, &Reply::Done { bytes, entries: copied.entries }).await
}

/// Sends `path` as a tar archive whose top entry is `name` (default: the path's last part).
pub async fn copy_out(path: &str, name: Option<String>, writer: &mut Writer) -> Result<(), OpError> {
    let path = absolute(path)?.to_path_buf();
    std::fs::symlink_metadata(&path).map_err(|e| OpError::io(e, path.display()))?;
    let name = match name {
        Some(name) if name.is_empty() || name.contains('/') || name == ".." => {
            return Err(OpError::new(GuestErrorCode::InvalidArgument, format!("{name:?} is not a file name")))
        }
        Some(name) => OsString::from(name),
        None => path.file_name().map_or_else(|| OsString::from("."), OsString::from),
    };
    send(writer, &Reply::Ready).await?;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let packing = tokio::task::spawn_blocking(move || pack(ChannelWriter::new(tx), &path, &name));
    let mut bytes = 0u64;
    while let Some(chunk) = rx.recv().await {
        bytes += chunk.len() as u64;
        if writer.data(Stream::Archive, &chunk).await.is_err() {
            // The client left; dropping the receiver stops the packer.
            return Ok(());
        }
    }
    let copied = joined(packing.await)?;
    writer.end(Stream::Archive).await.map_err(|e| OpError::io(e, "the client"))?;
    send(writer, &Reply::Done { bytes, entries: copied.entries }).await
}

fn joined<T>(result: Result<Result<T, ArchiveError>, tokio::task::JoinError>) -> Result<T, OpError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(ArchiveError::Io { path, source })) => Err(OpError::io(source, path.display())),
        Ok(Err(escape @ ArchiveError::Escapes(_))) => {
            Err(OpError::new(GuestErrorCode::PermissionDenied, escape.to_string()))
        }
        Err(e) => Err(OpError::new(GuestErrorCode::Io, format!("the archive task failed: {e}"))),
    }
}
