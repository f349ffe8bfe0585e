//! [`ErrorCode`]: the stable, documented codes behind [`SmartVmError::code`](super::SmartVmError::code).

use std::fmt;

/// Every error code smartvm reports. Matching on it is exhaustive on purpose: a new code makes
/// every `match` (such as the CLI's exit-status table) fail to compile until it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `INVALID_STATE`.
    InvalidState,
    /// `INVALID_CONFIG`.
    InvalidConfig,
    /// `SOCKET_TIMEOUT`.
    SocketTimeout,
    /// `API_TIMEOUT`.
    ApiTimeout,
    /// `SOCKET_REQUEST_FAILED`.
    SocketRequestFailed,
    /// `API_ERROR`.
    ApiError,
    /// `BINARY_NOT_FOUND`.
    BinaryNotFound,
    /// `DOWNLOAD_FAILED`.
    DownloadFailed,
    /// `VERSION_FETCH_FAILED`.
    VersionFetchFailed,
    /// `BASE_IMAGE_RESOLVE_FAILED`.
    BaseImageResolveFailed,
    /// `BASE_IMAGE_MANIFEST_FAILED`.
    BaseImageManifestFailed,
    /// `INVALID_BASE_IMAGE_MANIFEST`.
    InvalidBaseImageManifest,
    /// `INVALID_BASE_IMAGE_CACHE_LIMIT`.
    InvalidBaseImageCacheLimit,
    /// `BASE_IMAGE_PREPARE_FAILED`.
    BaseImagePrepareFailed,
    /// `INVALID_SUBNET`.
    InvalidSubnet,
    /// `INVALID_INTERFACE_NAME`.
    InvalidInterfaceName,
    /// `IP_EXHAUSTED`.
    IpExhausted,
    /// `BRIDGE_SETUP_FAILED`.
    BridgeSetupFailed,
    /// `TAP_CREATE_FAILED`.
    TapCreateFailed,
    /// `ROOTFS_CREATE_FAILED`.
    RootfsCreateFailed,
    /// `ROOTFS_CLONE_FAILED`.
    RootfsCloneFailed,
    /// `START_FAILED`.
    StartFailed,
    /// `NO_CLIENT`.
    NoClient,
    /// `PROCESS_FAILED`.
    ProcessFailed,
    /// `STAGING_FAILED`.
    StagingFailed,
    /// `IO_ERROR`.
    IoError,
    /// `SNAPSHOT_FAILED`.
    SnapshotFailed,
    /// `UNTRUSTED_PATH`.
    UntrustedPath,
    /// `VM_NOT_FOUND`: no VM with that id (the host agent).
    VmNotFound,
    /// `POOL_NOT_FOUND`: no warm pool with that name (the host agent).
    PoolNotFound,
    /// `AGENT_UNAVAILABLE`: no host agent answers on its socket.
    AgentUnavailable,
    /// `PERMISSION_DENIED`: the host agent refuses this caller (or this use of a path).
    PermissionDenied,
    /// `BUSY`: the host agent is at a limit (starts in flight, VMs held); retry later.
    Busy,
    /// `NO_SUCH_ROUTE`: the host agent serves no such path or method.
    NoSuchRoute,
    /// `GUEST_UNAVAILABLE`: no guest agent answers (no vsock device, nothing listening on the
    /// port, no answer in time).
    GuestUnavailable,
    /// `GUEST_PROTOCOL`: the guest answered with bytes or messages outside the protocol.
    GuestProtocol,
    /// `GUEST_REFUSED`: the guest agent refused or failed the request (its own code inside: an
    /// unsupported capability, a missing path, a port that refused).
    GuestRefused,
    /// `EXEC_FAILED`: a command in the guest could not start, or ended unsuccessfully where
    /// success was required.
    ExecFailed,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 38] = [
        ErrorCode::InvalidState,
        ErrorCode::InvalidConfig,
        ErrorCode::SocketTimeout,
        ErrorCode::ApiTimeout,
        ErrorCode::SocketRequestFailed,
        ErrorCode::ApiError,
        ErrorCode::BinaryNotFound,
        ErrorCode::DownloadFailed,
        ErrorCode::VersionFetchFailed,
        ErrorCode::BaseImageResolveFailed,
        ErrorCode::BaseImageManifestFailed,
        ErrorCode::InvalidBaseImageManifest,
        ErrorCode::InvalidBaseImageCacheLimit,
        ErrorCode::BaseImagePrepareFailed,
        ErrorCode::InvalidSubnet,
        ErrorCode::InvalidInterfaceName,
        ErrorCode::IpExhausted,
        ErrorCode::BridgeSetupFailed,
        ErrorCode::TapCreateFailed,
        ErrorCode::RootfsCreateFailed,
        ErrorCode::RootfsCloneFailed,
        ErrorCode::StartFailed,
        ErrorCode::NoClient,
        ErrorCode::ProcessFailed,
        ErrorCode::StagingFailed,
        ErrorCode::IoError,
        ErrorCode::SnapshotFailed,
        ErrorCode::UntrustedPath,
        ErrorCode::VmNotFound,
        ErrorCode::PoolNotFound,
        ErrorCode::AgentUnavailable,
        ErrorCode::PermissionDenied,
        ErrorCode::Busy,
        ErrorCode::NoSuchRoute,
        ErrorCode::GuestUnavailable,
        ErrorCode::GuestProtocol,
        ErrorCode::GuestRefused,
        ErrorCode::ExecFailed,
    ];

    /// The code as written in docs, logs and JSON (`SCREAMING_SNAKE_CASE`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::SocketTimeout => "SOCKET_TIMEOUT",
            ErrorCode::ApiTimeout => "API_TIMEOUT",
            ErrorCode::SocketRequestFailed => "SOCKET_REQUEST_FAILED",
            ErrorCode::ApiError => "API_ERROR",
            ErrorCode::BinaryNotFound => "BINARY_NOT_FOUND",
            ErrorCode::DownloadFailed => "DOWNLOAD_FAILED",
            ErrorCode::VersionFetchFailed => "VERSION_FETCH_FAILED",
            ErrorCode::BaseImageResolveFailed => "BASE_IMAGE_RESOLVE_FAILED",
            ErrorCode::BaseImageManifestFailed => "BASE_IMAGE_MANIFEST_FAILED",
            ErrorCode::InvalidBaseImageManifest => "INVALID_BASE_IMAGE_MANIFEST",
            ErrorCode::InvalidBaseImageCacheLimit => "INVALID_BASE_IMAGE_CACHE_LIMIT",
            ErrorCode::BaseImagePrepareFailed => "BASE_IMAGE_PREPARE_FAILED",
            ErrorCode::InvalidSubnet => "INVALID_SUBNET",
            ErrorCode::InvalidInterfaceName => "INVALID_INTERFACE_NAME",
            ErrorCode::IpExhausted => "IP_EXHAUSTED",
            ErrorCode::BridgeSetupFailed => "BRIDGE_SETUP_FAILED",
            ErrorCode::TapCreateFailed => "TAP_CREATE_FAILED",
            ErrorCode::RootfsCreateFailed => "ROOTFS_CREATE_FAILED",
            ErrorCode::RootfsCloneFailed => "ROOTFS_CLONE_FAILED",
            ErrorCode::StartFailed => "START_FAILED",
            ErrorCode::NoClient => "NO_CLIENT",
            ErrorCode::ProcessFailed => "PROCESS_FAILED",
            ErrorCode::StagingFailed => "STAGING_FAILED",
            ErrorCode::IoError => "IO_ERROR",
            ErrorCode::SnapshotFailed => "SNAPSHOT_FAILED",
            ErrorCode::UntrustedPath => "UNTRUSTED_PATH",
            ErrorCode::VmNotFound => "VM_NOT_FOUND",
            ErrorCode::PoolNotFound => "POOL_NOT_FOUND",
            ErrorCode::AgentUnavailable => "AGENT_UNAVAILABLE",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Busy => "BUSY",
            ErrorCode::NoSuchRoute => "NO_SUCH_ROUTE",
            ErrorCode::GuestUnavailable => "GUEST_UNAVAILABLE",
            ErrorCode::GuestProtocol => "GUEST_PROTOCOL",
            ErrorCode::GuestRefused => "GUEST_REFUSED",
            ErrorCode::ExecFailed => "EXEC_FAILED",
        }
    }

    /// The code written as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown error code {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_screaming_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert!(c.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{c}");
            assert_eq!(c, c.as_str());
        }
    }
}
