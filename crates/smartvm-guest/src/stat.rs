//! `stat`: one path's metadata.

use std::os::unix::fs::MetadataExt;

use smartvm_guest_protocol::{FileKind, StatReply};

use crate::op::{absolute, OpError};

/// Metadata of `path`, not following a final symlink.
pub fn stat(path: &str) -> Result<StatReply, OpError> {
    let meta = std::fs::symlink_metadata(absolute(path)?).map_err(|e| OpError::io(e, path))?;
    let kind = if meta.is_file() {
        FileKind::File
    } else if meta.is_dir() {
        FileKind::Dir
    } else if meta.file_type().is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    Ok(StatReply {
        kind,
        size: meta.size(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
    })
}
