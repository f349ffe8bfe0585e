//! The tar archives of `copy_in` and `copy_out`, packed and unpacked the same way on both sides:
//! modes, ownership and times kept; symlinks kept as links (never followed); sockets skipped;
//! unpacking never writes outside its directory (no `..`, no absolute names, no writing through
//! a link that leads out).
//!
//! The `tar` crate is blocking, so packing and unpacking run on a blocking thread and meet the
//! connection through [`ChannelReader`] / [`ChannelWriter`]: bounded channels of chunks, which
//! is the back-pressure in both directions.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::DATA_CHUNK;

/// Why packing or unpacking failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a file (or the archive) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file, or `archive` for the stream itself.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An entry would land outside the target directory.
    #[error("archive entry {0:?} would land outside the target directory")]
    Escapes(String),
}

impl ArchiveError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }

    /// The I/O error's kind, if it is one.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            ArchiveError::Io { source, .. } => Some(source.kind()),
            ArchiveError::Escapes(_) => None,
        }
    }
}

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Copied {
    /// Entries: files, directories, links.
    pub entries: u64,
}

/// Packs `path` (a file, link, or directory with everything under it) as one top entry named
/// `name`, in a stable order.
pub fn pack(sink: impl Write, path: &Path, name: &OsStr) -> Result<Copied, ArchiveError> {
    let mut builder = tar::Builder::new(sink);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let mut entries = 0;
    let mut pending = vec![(path.to_path_buf(), PathBuf::from(name))];
    while let Some((source, archived)) = pending.pop() {
        let meta = std::fs::symlink_metadata(&source).map_err(ArchiveError::io(&source))?;
        let kind = meta.file_type();
        if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            continue;
        }
        if kind.is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(&source)
                .and_then(|dir| dir.map(|entry| entry.map(|e| e.file_name())).collect::<io::Result<_>>())
                .map_err(ArchiveError::io(&source))?;
            children.sort();
            pending.extend(children.into_iter().rev().map(|child| (source.join(&child), archived.join(&child))));
        }
        builder.append_path_with_name(&source, &archived).map_err(ArchiveError::io(&source))?;
        entries += 1;
    }
    let mut sink = builder.into_inner().map_err(ArchiveError::io("archive"))?;
    sink.flush().map_err(ArchiveError::io("archive"))?;
    Ok(Copied { entries })
}

/// Unpacks an archive into the existing directory `dir`.
pub fn unpack(source: impl Read, dir: &Path) -> Result<Copied, ArchiveError> {
    let mut archive = tar::Archive::new(source);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut entries = 0;
    for entry in archive.entries().map_err(ArchiveError::io("archive"))? {
        let mut entry = entry.map_err(ArchiveError::io("archive"))?;
        let name = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
        // `unpack_in` refuses `..`, absolute names and writing through links out of `dir`.
        if !entry.unpack_in(dir).map_err(ArchiveError::io(dir.join(&name)))? {
            return Err(ArchiveError::Escapes(name));
        }
        entries += 1;
    }
    // Whatever follows the end blocks is drained, so the sender never blocks on a full channel.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(ArchiveError::io("archive"))?;
    Ok(Copied { entries })
}

/// A blocking reader of the chunks an async task receives.
pub struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    /// Reads what `rx` delivers; the end of the channel is the end of the stream.
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader { rx, chunk: Vec::new(), at: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => (self.chunk, self.at) = (chunk, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A blocking writer that hands chunks of at most [`DATA_CHUNK`] to an async task.
pub struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
}

impl ChannelWriter {
    /// Sends to `tx`; a closed channel makes writes fail with `BrokenPipe`.
    pub fn new(tx: mpsc::Sender<Vec<u8>>) -> ChannelWriter {
        ChannelWriter { tx, chunk: Vec::with_capacity(DATA_CHUNK) }
    }

    fn ship(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(DATA_CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the peer left"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(DATA_CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == DATA_CHUNK {
            self.ship()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.ship()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_tree_round_trips_with_modes_links_and_a_new_top_name() {
        let from = tempfile::tempdir().unwrap();
        let tree = from.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(tree.join("sub/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("sub/run.sh", tree.join("link")).unwrap();
        let mut archive = Vec::new();
        let packed = pack(&mut archive, &tree, OsStr::new("renamed")).unwrap();
        assert_eq!(packed.entries, 4);
        let to = tempfile::tempdir().unwrap();
        let unpacked = unpack(&archive[..], to.path()).unwrap();
        assert_eq!(unpacked, packed);
        let script = to.path().join("renamed/sub/run.sh");
        assert_eq!(std::fs::read_to_string(&script).unwrap(), "#!/bin/sh\n");
        assert_eq!(std::fs::metadata(&script).unwrap().permissions().mode() & 0o7777, 0o750);
        assert_eq!(std::fs::read_link(to.path().join("renamed/link")).unwrap(), Path::new("sub/run.sh"));
    }

    #[test]
    fn an_entry_that_climbs_out_is_refused() {
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        let name = b"../escaped";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        let mut archive = Vec::new();
        archive.extend_from_slice(header.as_bytes());
        archive.extend_from_slice(&[b'x'; 512]);
        archive.extend_from_slice(&[0; 1024]);
        let to = tempfile::tempdir().unwrap();
        let inner = to.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        assert!(matches!(unpack(&archive[..], &inner), Err(ArchiveError::Escapes(_))));
        assert!(!to.path().join("escaped").exists());
    }
}
