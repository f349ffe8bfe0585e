//! [`SnapshotError`]: failures of snapshots (`SNAPSHOT_FAILED`): bundles that cannot be read or
//! written, Diff chains that cannot be merged, restores that cannot be placed.

use std::path::PathBuf;

/// Snapshot failures; each names the file or VM it is about, the OS or JSON error chained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A Diff chain longer than smartvm follows (a loop, or a forged bundle).
    #[error("Diff chain deeper than {0} bundles")]
    ChainTooDeep(usize),
    /// A bundle's `snapshot.json` cannot be read or is not a snapshot description.
    #[error("{}: {what}", path.display())]
    BadBundle {
        /// The description file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A path in a bundle points outside it.
    #[error("{field} {} is not inside the bundle {}", path.display(), bundle.display())]
    OutsideBundle {
        /// Which path (`statePath`, a drive).
        field: String,
        /// The path.
        path: PathBuf,
        /// The bundle dir.
        bundle: PathBuf,
    },
    /// A Diff's base has no bundle dir (it cannot be referred to from the Diff's bundle).
    #[error("base {} has no bundle dir", .0.display())]
    BaseWithoutBundle(PathBuf),
    /// A Diff snapshot without its base.
    #[error("Diff snapshot {} has no base", .0.display())]
    DiffWithoutBase(PathBuf),
    /// The description could not be encoded.
    #[error("cannot encode the snapshot description")]
    Encode(#[source] serde_json::Error),
    /// A file of a snapshot could not be read, written or copied.
    #[error("cannot {action} {}", path.display())]
    File {
        /// `write`, `copy`, `open`, `stat`, …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A staged drive could not be copied into the bundle.
    #[error("cannot copy drive {drive_id}")]
    CopyDrive {
        /// The drive.
        drive_id: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot's files could not be copied into (or out of) the jail.
    #[error("cannot move the snapshot files through the jail")]
    Jail(#[source] std::io::Error),
    /// No VM with this id in the runtime dir (snapshot of a VM another program holds).
    #[error("no VM {id:?} in {}: {why}", runtime_dir.display())]
    NoSuchVm {
        /// The VM id.
        id: String,
        /// Where it was looked for.
        runtime_dir: PathBuf,
        /// Why its journal could not be used.
        why: String,
    },
    /// The VM's process is not running.
    #[error("VM {0:?} is not running")]
    NotRunning(String),
    /// A bundle restored by itself must carry the VM's configuration.
    #[error("{} records no VM configuration", .0.display())]
    NoConfig(PathBuf),
    /// A restore was asked for without a snapshot.
    #[error("nothing to restore from")]
    NothingToRestore,
    /// Ephemeral drives of a snapshot resolve only where every VM sees its drives at one path.
    #[error("restoring a snapshot with ephemeral drives needs the drive namespace (root)")]
    NeedsDriveNamespace,
    /// A background copy or merge task ended abnormally.
    #[error("the {0} task failed")]
    Task(&'static str, #[source] tokio::task::JoinError),
}

impl SnapshotError {
    /// True when what the caller named is at fault (a bundle that is no snapshot, points
    /// outside itself, or carries no config; a VM that does not run), not the host.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            SnapshotError::ChainTooDeep(_)
                | SnapshotError::BadBundle { .. }
                | SnapshotError::OutsideBundle { .. }
                | SnapshotError::DiffWithoutBase(_)
                | SnapshotError::NoSuchVm { .. }
                | SnapshotError::NotRunning(_)
                | SnapshotError::NoConfig(_)
        )
    }
}
