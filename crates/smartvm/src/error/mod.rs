//! The one public error type, [`SmartVmError`], with stable codes.
//!
//! Each layer has its own error type ([`ConfigErrors`], [`ApiError`], [`ProcessError`],
//! [`StagingError`], `ImageError`, `NetworkError`); they fold into `SmartVmError`, which keeps them
//! as its `source()` so the whole cause chain is available to callers and the CLI. The wire,
//! image and network error enums are defined here (their layers re-export them), so this module
//! imports no layer above it: every layer can use `SmartVmError` without a circle.

mod api;
mod code;
mod guest;
#[cfg(feature = "images")]
mod image;
#[cfg(feature = "network")]
mod network;
mod process;
mod snapshot;

use std::path::PathBuf;

pub use api::ApiError;
pub use code::ErrorCode;
pub use guest::GuestError;
#[cfg(feature = "images")]
pub use image::ImageError;
#[cfg(feature = "network")]
pub use network::NetworkError;
pub use process::ProcessError;
pub use snapshot::SnapshotError;

/// The boxed cause a layer error keeps.
#[cfg(any(feature = "images", feature = "network"))]
type Cause = Box<dyn std::error::Error + Send + Sync>;
use crate::config::ConfigErrors;
use crate::lifecycle::{Step, VmState};
use crate::staging::StagingError;

/// Result alias used across the library.
pub type Result<T, E = SmartVmError> = std::result::Result<T, E>;

/// Every failure smartvm reports. [`code()`](SmartVmError::code) is stable and documented.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmartVmError {
    /// `INVALID_STATE`: the operation is not allowed in the VM's current state; nothing changed.
    #[error("cannot {operation} a VM that is {state}")]
    InvalidState {
        /// The operation that was refused.
        operation: &'static str,
        /// The state the VM was in.
        state: VmState,
    },
    /// `INVALID_CONFIG`: the configuration has one or more problems (all are listed).
    #[error("invalid VM configuration: {0}")]
    InvalidConfig(ConfigErrors),
    /// `SOCKET_TIMEOUT`: the API socket did not appear or answer in time.
    #[error("Firecracker API socket {} was not ready within {timeout_ms} ms", path.display())]
    SocketTimeout {
        /// The socket path.
        path: PathBuf,
        /// How long smartvm waited.
        timeout_ms: u64,
    },
    /// `API_TIMEOUT`: the API socket exists but Firecracker's API did not answer in time (the
    /// seed's readiness check).
    #[error("Firecracker API at {} did not answer within {timeout_ms} ms", path.display())]
    ApiNotReady {
        /// The socket path.
        path: PathBuf,
        /// How long smartvm waited.
        timeout_ms: u64,
    },
    /// `API_TIMEOUT`: an API request got no answer in time.
    #[error("Firecracker API request {method} {path} timed out")]
    ApiTimeout {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
    },
    /// `SOCKET_REQUEST_FAILED`: the request could not be sent or its answer not read.
    #[error("Firecracker API request {method} {path} failed")]
    SocketRequestFailed {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// What went wrong on the wire.
        #[source]
        source: ApiError,
    },
    /// `API_ERROR`: Firecracker answered with a non-success status.
    #[error("Firecracker rejected {method} {path} with HTTP {status}{}", fault_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Api {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// Firecracker's `fault_message` (or micro-http's `error`).
        fault_message: Option<String>,
    },
    /// `BINARY_NOT_FOUND`: no Firecracker binary in any searched place.
    #[error("no Firecracker binary found (searched: {}); run `smartvm binary ensure` to download it, or set SMARTVM_FIRECRACKER_BIN", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    BinaryNotFound {
        /// Every place that was looked at.
        searched: Vec<PathBuf>,
    },
    /// A start or restore failed at `step`; everything it had created was removed. Its
    /// [`code()`](SmartVmError::code) is the cause's (`SOCKET_TIMEOUT`, `API_ERROR`,
    /// `TAP_CREATE_FAILED`, …), as the seed raises them from `start()`; `START_FAILED` only
    /// for a cause without a code of its own (an OS error on smartvm's own files).
    #[error("VM {vm_id} failed to start at step {step}")]
    StartFailed {
        /// The VM's id.
        vm_id: String,
        /// The step that failed.
        step: Step,
        /// Why.
        #[source]
        source: Box<SmartVmError>,
    },
    /// `NO_CLIENT`: the VM has no API client (it was never started, is stopped or cleaned up,
    /// or runs with the API off).
    #[error("VM has no API client (not started, stopped, or started with the API off)")]
    NoClient,
    /// `PROCESS_FAILED`: spawning, watching or stopping the Firecracker process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// `STAGING_FAILED`: an ephemeral drive could not be staged.
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// `IO_ERROR`: a filesystem operation on smartvm's own directories failed.
    #[error("{context}")]
    Io {
        /// What smartvm was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Images layer (`DOWNLOAD_FAILED`, `VERSION_FETCH_FAILED`, `BASE_IMAGE_*`, `ROOTFS_*`).
    #[error(transparent)]
    #[cfg(feature = "images")]
    Image(#[from] ImageError),
    /// Network layer (`INVALID_SUBNET`, `INVALID_INTERFACE_NAME`, `IP_EXHAUSTED`,
    /// `BRIDGE_SETUP_FAILED`, `TAP_CREATE_FAILED`).
    #[error(transparent)]
    #[cfg(feature = "network")]
    Network(#[from] NetworkError),
    /// `SNAPSHOT_FAILED`: a snapshot could not be created, merged or restored.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// `UNTRUSTED_PATH`: a binary to execute or a directory to keep state in could have been
    /// written by another user (see [`trust`](crate::trust)); nothing was executed or created.
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    /// `VM_NOT_FOUND`: no VM with this id.
    #[error("no VM {id:?}")]
    VmNotFound {
        /// The id asked for.
        id: String,
    },
    /// `POOL_NOT_FOUND`: no warm pool with this name.
    #[error("no pool {name:?}")]
    PoolNotFound {
        /// The name asked for.
        name: String,
    },
    /// `AGENT_UNAVAILABLE`: no host agent answers at `socket`.
    #[error("no smartvm agent answers at {} (start one with `smartvm serve`)", socket.display())]
    AgentUnavailable {
        /// The agent's socket.
        socket: PathBuf,
        /// Why it could not be reached.
        #[source]
        source: std::io::Error,
    },
    /// `PERMISSION_DENIED`: this caller may not do this (the host agent's caller classes: only
    /// root and the agent's own user may name host paths).
    #[error("{field}: {reason}")]
    PermissionDenied {
        /// What was refused (a config field such as `drives[0].pathOnHost`, or a route).
        field: String,
        /// Why.
        reason: String,
    },
    /// `BUSY`: a limit of the host agent is reached (starts in flight, VMs held); retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// `NO_SUCH_ROUTE`: the host agent serves no such path (or not with that method).
    #[error("{0}")]
    NoSuchRoute(String),
    /// `GUEST_UNAVAILABLE`, `GUEST_PROTOCOL`, `GUEST_REFUSED`, `EXEC_FAILED` or `IO_ERROR`: talking
    /// to the agent inside a guest failed (see [`GuestError::code`]).
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// An error the host agent reported, with its code.
    #[error("{message}")]
    Agent {
        /// HTTP status of the answer.
        status: u16,
        /// The error's code.
        code: ErrorCode,
        /// The agent's message.
        message: String,
    },
}

impl SmartVmError {
    /// The stable error code (SPEC §1 plus smartvm's own: `PROCESS_FAILED`, `STAGING_FAILED`,
    /// `IO_ERROR`, `SNAPSHOT_FAILED`, `UNTRUSTED_PATH`). Compares equal to its string form.
    /// A failed start has its cause's code (see [`StartFailed`](SmartVmError::StartFailed)).
    pub fn code(&self) -> ErrorCode {
        match self {
            SmartVmError::InvalidState { .. } => ErrorCode::InvalidState,
            SmartVmError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            SmartVmError::SocketTimeout { .. } => ErrorCode::SocketTimeout,
            SmartVmError::ApiTimeout { .. } | SmartVmError::ApiNotReady { .. } => ErrorCode::ApiTimeout,
            SmartVmError::SocketRequestFailed { .. } => ErrorCode::SocketRequestFailed,
            SmartVmError::Api { .. } => ErrorCode::ApiError,
            SmartVmError::BinaryNotFound { .. } => ErrorCode::BinaryNotFound,
            SmartVmError::StartFailed { source, .. } => match source.code() {
                ErrorCode::IoError => ErrorCode::StartFailed,
                cause => cause,
            },
            SmartVmError::NoClient => ErrorCode::NoClient,
            SmartVmError::Process(_) => ErrorCode::ProcessFailed,
            SmartVmError::Staging(_) => ErrorCode::StagingFailed,
            SmartVmError::Io { .. } => ErrorCode::IoError,
            SmartVmError::Snapshot(_) => ErrorCode::SnapshotFailed,
            SmartVmError::Untrusted(_) => ErrorCode::UntrustedPath,
            SmartVmError::VmNotFound { .. } => ErrorCode::VmNotFound,
            SmartVmError::PoolNotFound { .. } => ErrorCode::PoolNotFound,
            SmartVmError::AgentUnavailable { .. } => ErrorCode::AgentUnavailable,
            SmartVmError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            SmartVmError::Busy(_) => ErrorCode::Busy,
            SmartVmError::NoSuchRoute(_) => ErrorCode::NoSuchRoute,
            SmartVmError::Agent { code, .. } => *code,
            SmartVmError::Guest(e) => e.code(),
            #[cfg(feature = "images")]
            SmartVmError::Image(e) => e.code(),
            #[cfg(feature = "network")]
            SmartVmError::Network(e) => e.code(),
        }
    }

    /// The HTTP status, for errors that came from a Firecracker answer (also through `START_FAILED`).
    pub fn status(&self) -> Option<u16> {
        match self {
            SmartVmError::Api { status, .. } => Some(*status),
            SmartVmError::StartFailed { source, .. } => source.status(),
            _ => None,
        }
    }

    /// Firecracker's `fault_message`, where it sent one (also through `START_FAILED`).
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            SmartVmError::Api { fault_message, .. } => fault_message.as_deref(),
            SmartVmError::StartFailed { source, .. } => source.fault_message(),
            _ => None,
        }
    }

    /// The start step that failed, for a failed start or restore.
    pub fn step(&self) -> Option<Step> {
        match self {
            SmartVmError::StartFailed { step, .. } => Some(*step),
            _ => None,
        }
    }

    /// The cause when this is a failed start, else `self`.
    pub fn root(&self) -> &SmartVmError {
        match self {
            SmartVmError::StartFailed { source, .. } => source.root(),
            other => other,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SmartVmError::Io { context: context.into(), source }
    }
}

impl From<crate::trust::EnsureDirError> for SmartVmError {
    fn from(e: crate::trust::EnsureDirError) -> Self {
        match e {
            crate::trust::EnsureDirError::Untrusted(t) => SmartVmError::Untrusted(t),
            crate::trust::EnsureDirError::Create { path, source } => {
                SmartVmError::io(format!("cannot create {}", path.display()), source)
            }
        }
    }
}

impl From<ConfigErrors> for SmartVmError {
    fn from(e: ConfigErrors) -> Self {
        SmartVmError::InvalidConfig(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn codes_status_and_chain() {
        let api = SmartVmError::Api {
            method: "PUT".into(),
            path: "/boot-source".into(),
            status: 400,
            fault_message: Some("Invalid kernel path".into()),
        };
        assert_eq!(api.code(), "API_ERROR");
        assert_eq!(api.status(), Some(400));
        assert!(api.to_string().contains("Invalid kernel path"));
        let start = SmartVmError::StartFailed { vm_id: "a".into(), step: Step::Configure, source: Box::new(api) };
        assert_eq!(start.code(), "API_ERROR", "a failed start has its cause's code");
        assert_eq!(start.step(), Some(Step::Configure));
        assert_eq!(start.to_string(), "VM a failed to start at step configure");
        assert_eq!(start.status(), Some(400));
        assert_eq!(start.fault_message(), Some("Invalid kernel path"));
        assert_eq!(start.root().code(), "API_ERROR");
        assert!(start.source().is_some());
        let state = SmartVmError::InvalidState { operation: "pause", state: VmState::Created };
        assert_eq!(state.code(), "INVALID_STATE");
        assert_eq!(state.to_string(), "cannot pause a VM that is created");
        assert_eq!(SmartVmError::NoClient.code(), "NO_CLIENT");
        let io = SmartVmError::io("cannot create drives dir", std::io::Error::other("disk full"));
        let start = SmartVmError::StartFailed { vm_id: "a".into(), step: Step::StageDrives, source: Box::new(io) };
        assert_eq!(start.code(), "START_FAILED", "an OS error has no code of its own");
        assert_eq!(start.root().code(), "IO_ERROR");
        let not_ready = SmartVmError::ApiNotReady { path: "/run/x.sock".into(), timeout_ms: 5 };
        assert_eq!(not_ready.code(), "API_TIMEOUT");
    }
}
