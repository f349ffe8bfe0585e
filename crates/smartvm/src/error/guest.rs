//! [`GuestError`]: failures talking to the agent inside a guest (`smartvm::guest`).

use std::time::Duration;

use smartvm_guest_protocol::{ExitStatus, GuestErrorCode};

use super::ErrorCode;

/// Why a guest operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Nothing accepted the connection.
    #[error("no guest agent answers at {address}")]
    Unavailable {
        /// The guest's address (`unix:PATH`, or the vsock socket and port).
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Firecracker's vsock device answered the `CONNECT` with something other than `OK`: nothing
    /// in the guest listens on that port.
    #[error("nothing in the guest listens on vsock port {port} ({address} answered {answer:?})")]
    NotListening {
        /// The vsock device's host socket.
        address: String,
        /// The guest port.
        port: u32,
        /// What the device said (empty when it closed the connection).
        answer: String,
    },
    /// No answer in time.
    #[error("the guest did not answer {operation} within {after:?}")]
    Timeout {
        /// What was asked.
        operation: &'static str,
        /// The limit.
        after: Duration,
    },
    /// Bytes or messages outside the protocol.
    #[error("the guest broke the protocol during {operation}: {reason}")]
    Protocol {
        /// What was asked.
        operation: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("the guest refused {operation}: {message} ({code:?})")]
    Refused {
        /// What was asked.
        operation: &'static str,
        /// The agent's code (`Unsupported` when the guest lacks the capability).
        code: GuestErrorCode,
        /// The agent's message.
        message: String,
    },
    /// A command ended unsuccessfully where success was required.
    #[error("{command:?} ended with {status:?} in the guest")]
    ExecFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// A local file or socket failed (the host side of a copy or a forward).
    #[error("{context}")]
    Local {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl GuestError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            GuestError::Unavailable { .. } | GuestError::NotListening { .. } | GuestError::Timeout { .. } => {
                ErrorCode::GuestUnavailable
            }
            GuestError::Protocol { .. } => ErrorCode::GuestProtocol,
            GuestError::Refused { code: GuestErrorCode::SpawnFailed, .. } => ErrorCode::ExecFailed,
            GuestError::Refused { .. } => ErrorCode::GuestRefused,
            GuestError::ExecFailed { .. } => ErrorCode::ExecFailed,
            GuestError::Local { .. } => ErrorCode::IoError,
        }
    }

    /// The agent's own code, when it answered with an error.
    pub fn guest_code(&self) -> Option<GuestErrorCode> {
        match self {
            GuestError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How the command ended, for [`ExecFailed`](GuestError::ExecFailed).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self {
            GuestError::ExecFailed { status, .. } => Some(*status),
            _ => None,
        }
    }
}
