//! [`ProcessError`]: failures of the [`process`](crate::process) layer (spawning, watching and
//! stopping Firecracker).

use std::path::PathBuf;

use crate::lifecycle::ExitInfo;

/// Process-level failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The binary could not be executed.
    #[error("cannot spawn {}", binary.display())]
    Spawn {
        /// Binary path.
        binary: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Firecracker exited before it was ready.
    #[error("Firecracker exited early ({exit}); stderr: {stderr}")]
    ExitedEarly {
        /// How it ended.
        exit: ExitInfo,
        /// Last lines of its stderr and stdout.
        stderr: String,
    },
    /// Firecracker ended unsuccessfully while the VM ran (the guest crashed, or it was killed).
    #[error("Firecracker ended with {exit}")]
    Ended {
        /// How it ended.
        exit: ExitInfo,
    },
    /// A signal could not be delivered.
    #[error("cannot signal process {pid}")]
    Signal {
        /// The pid.
        pid: i32,
        /// OS error.
        #[source]
        source: nix::Error,
    },
    /// The process survived every stop step.
    #[error("process {pid} did not exit after SIGKILL")]
    Unkillable {
        /// The pid.
        pid: i32,
    },
    /// The console file could not be created.
    #[error("cannot create console file {}", path.display())]
    ConsoleFile {
        /// The path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}
