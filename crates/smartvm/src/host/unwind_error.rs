//! [`UnwindError`]: why a resource was left by an unwind.

use crate::trust::confine::ConfineError;

/// Why a resource was left.
#[derive(Debug, thiserror::Error)]
pub enum UnwindError {
    /// A path outside smartvm's dirs, or reached through a symlink.
    #[error(transparent)]
    Confine(#[from] ConfineError),
    /// The resource does not look like what smartvm created (a foreign process, a non-TAP).
    #[error("not acted on: {0}")]
    NotOurs(&'static str),
    /// The process survived SIGKILL.
    #[error("process {0} did not exit after SIGKILL")]
    Unkillable(i32),
    /// An OS call failed.
    #[error(transparent)]
    Os(#[from] std::io::Error),
    /// A TAP could not be deleted.
    #[cfg(feature = "network")]
    #[error(transparent)]
    Tap(super::tap_removal::TapRemovalError),
}
