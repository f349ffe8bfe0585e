//! Where Firecracker writes a snapshot's files. A direct run writes straight into the bundle;
//! a jailed one can only write inside its chroot, as the jail user, so the files are written
//! there and then moved into the bundle (renamed, or copied across filesystems) and made ours.
//! The chroot belongs to the jail user: its files are opened without following symlinks and
//! must be regular files.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::trust::confine::{open_file_beneath, remove_beneath, Removal};

/// The dir inside a chroot a snapshot is written to, and read from on restore.
const JAIL_OUT_DIR: &str = "snapshot-out";

/// Where Firecracker writes a snapshot's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOutput {
    /// Straight into the bundle.
    Direct,
    /// Inside the chroot `root` of a jailed VM, as the jail user `uid`/`gid`.
    Jail {
        /// The chroot (`/` for the VMM).
        root: PathBuf,
        /// The jail user.
        uid: u32,
        /// The jail group.
        gid: u32,
    },
}

/// Paths of one snapshot write: what Firecracker is told, and where the files land.
#[derive(Debug, Clone)]
pub(crate) struct OutputPaths {
    /// State and memory paths as Firecracker sees them.
    pub seen: (PathBuf, PathBuf),
    /// The same files on the host before they are collected.
    host: (PathBuf, PathBuf),
}

impl SnapshotOutput {
    /// The output of a VM known from its journal (another process runs it): a jailed VM's
    /// chroot is `<jail dir>/root` and its user owns the API socket the jailer made for it.
    pub(crate) fn for_journal(journal: &crate::host::VmJournal) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let Some(jail_dir) = journal.jail_dir() else { return Ok(Self::Direct) };
        let socket = std::fs::symlink_metadata(&journal.socket)?;
        Ok(Self::Jail { root: jail_dir.join("root"), uid: socket.uid(), gid: socket.gid() })
    }

    /// Prepares the place Firecracker writes `state` and `mem` (paths in the bundle) to.
    pub(crate) fn prepare(&self, state: &Path, mem: &Path) -> io::Result<OutputPaths> {
        let Self::Jail { root, uid, gid } = self else {
            let pair = (state.to_path_buf(), mem.to_path_buf());
            return Ok(OutputPaths { seen: pair.clone(), host: pair });
        };
        let dir = root.join(JAIL_OUT_DIR);
        remove_beneath(root, &dir, Removal::Tree).map_err(io::Error::other)?;
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid))?;
        let name = |p: &Path| p.file_name().map(PathBuf::from).unwrap_or_default();
        let seen_dir = Path::new("/").join(JAIL_OUT_DIR);
        Ok(OutputPaths {
            seen: (seen_dir.join(name(state)), seen_dir.join(name(mem))),
            host: (dir.join(name(state)), dir.join(name(mem))),
        })
    }

    /// Moves what Firecracker wrote into the bundle paths `state` and `mem`, owned by us, `0600`.
    pub(crate) fn collect(&self, paths: &OutputPaths, state: &Path, mem: &Path) -> io::Result<()> {
        let Self::Jail { root, .. } = self else { return Ok(()) };
        let moved = collect_file(root, &paths.host.0, state).and_then(|()| collect_file(root, &paths.host.1, mem));
        let removed = remove_beneath(root, &root.join(JAIL_OUT_DIR), Removal::Tree).map_err(io::Error::other);
        moved.and(removed.map(drop))
    }

    /// Cleans up after a failed write.
    pub(crate) fn discard(&self) {
        if let Self::Jail { root, .. } = self {
            let _ = remove_beneath(root, &root.join(JAIL_OUT_DIR), Removal::Tree);
        }
    }

    /// Restore: copies the bundle's `state` and `mem` where the jail user can read them and
    /// returns the paths Firecracker sees (the same paths for a direct run).
    pub(crate) fn place(&self, state: &Path, mem: &Path) -> io::Result<(PathBuf, PathBuf)> {
        let Self::Jail { uid, gid, .. } = self else { return Ok((state.to_path_buf(), mem.to_path_buf())) };
        let paths = self.prepare(state, mem)?;
        for (from, to) in [(state, &paths.host.0), (mem, &paths.host.1)] {
            crate::staging::stage_file(from, to)?;
            std::os::unix::fs::chown(to, Some(*uid), Some(*gid))?;
        }
        Ok(paths.seen)
    }
}

/// Moves the regular file `from` (beneath `root`, no symlinks) to `to`, then makes it ours and
/// private. A rename when both are on one filesystem, else a sparse copy.
fn collect_file(root: &Path, from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let source = open_file_beneath(root, from).map_err(io::Error::other)?;
    let out = match std::fs::rename(from, to) {
        Ok(()) => {
            let out =
                std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(to)?;
            // The jail user could have swapped the file between the check and the rename.
            if out.metadata()?.ino() != source.metadata()?.ino() {
                let _ = std::fs::remove_file(to);
                return Err(io::Error::other(format!("{} changed while it was collected", from.display())));
            }
            out
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to)?;
            let len = source.metadata()?.len();
            out.set_len(len)?;
            crate::staging::copy_data_ranges(&source, &out, len)?;
            out
        }
        Err(e) => return Err(e),
    };
    nix::unistd::fchown(out.as_raw_fd(), Some(nix::unistd::geteuid()), Some(nix::unistd::getegid()))?;
    out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
}
