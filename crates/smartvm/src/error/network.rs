//! [`NetworkError`]: failures of the [`network`](crate::network) layer, with their codes.

use super::{Cause, ErrorCode};

/// Networking failures, each with its stable code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// `INVALID_SUBNET`.
    #[error("invalid subnet {0}")]
    InvalidSubnet(String),
    /// `INVALID_INTERFACE_NAME`.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidInterfaceName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// `IP_EXHAUSTED`.
    #[error("no guest address left in {0}")]
    IpExhausted(String),
    /// `BRIDGE_SETUP_FAILED`: a step of bridge/forwarding/NAT setup failed (rolled back).
    #[error("bridge setup failed: {step}")]
    BridgeSetup {
        /// The step.
        step: String,
        /// Cause.
        #[source]
        source: Option<Cause>,
    },
    /// `TAP_CREATE_FAILED`: a TAP could not be created or attached (rolled back).
    #[error("cannot create TAP {name}: {step}")]
    TapCreate {
        /// TAP name.
        name: String,
        /// The step.
        step: String,
        /// Cause.
        #[source]
        source: Option<Cause>,
    },
}

impl NetworkError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            NetworkError::InvalidSubnet(_) => ErrorCode::InvalidSubnet,
            NetworkError::InvalidInterfaceName { .. } => ErrorCode::InvalidInterfaceName,
            NetworkError::IpExhausted(_) => ErrorCode::IpExhausted,
            NetworkError::BridgeSetup { .. } => ErrorCode::BridgeSetupFailed,
            NetworkError::TapCreate { .. } => ErrorCode::TapCreateFailed,
        }
    }
}
