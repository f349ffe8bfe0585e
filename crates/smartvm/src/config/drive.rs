//! `PUT /drives/{id}` (pre-boot) and `PATCH /drives/{id}` (hot update).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::rate_limiter::{RateLimiter, RateLimiterPayload};

/// Host page-cache behaviour of a drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// Block I/O engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum IoEngine {
    Sync,
    Async,
}

/// A block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriveConfig {
    /// Id, `[A-Za-z0-9_]`, unique within the VM.
    #[serde(alias = "drive_id")]
    pub drive_id: String,
    /// Backing file on the host (absent only for vhost-user drives).
    #[serde(default, alias = "path_on_host")]
    pub path_on_host: PathBuf,
    /// Whether this is the root device (`root=/dev/vda`).
    #[serde(default, alias = "is_root_device")]
    pub is_root_device: bool,
    /// Read-only to the guest.
    #[serde(default, alias = "is_read_only")]
    pub is_read_only: bool,
    /// Root partition UUID, for a partitioned root device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Page-cache mode.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "cache_type")]
    pub cache_type: Option<CacheType>,
    /// I/O engine.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "io_engine")]
    pub io_engine: Option<IoEngine>,
    /// Rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "rate_limiter")]
    pub rate_limiter: Option<RateLimiter>,
    /// vhost-user backend socket (instead of `path_on_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// smartvm: stage a private copy in the VM's runtime dir (default: writable drives only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
}

/// Firecracker's `PUT /drives/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrivePayload {
    pub(crate) drive_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_on_host: Option<PathBuf>,
    is_root_device: bool,
    is_read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    partuuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_type: Option<CacheType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    io_engine: Option<IoEngine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limiter: Option<RateLimiterPayload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<PathBuf>,
}

/// Firecracker's `PATCH /drives/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveUpdatePayload {
    pub(crate) drive_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path_on_host: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate_limiter: Option<RateLimiterPayload>,
}

impl DriveConfig {
    /// A writable, non-root drive backed by `path`.
    pub fn new(id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            drive_id: id.into(),
            path_on_host: path.into(),
            is_root_device: false,
            is_read_only: false,
            partuuid: None,
            cache_type: None,
            io_engine: None,
            rate_limiter: None,
            socket: None,
            ephemeral: None,
        }
    }
    /// Marks the drive as the root device.
    pub fn root(mut self) -> Self {
        self.is_root_device = true;
        self
    }
    /// Makes the drive read-only to the guest.
    pub fn read_only(mut self) -> Self {
        self.is_read_only = true;
        self
    }
    /// Forces (`true`) or forbids (`false`) staging a private copy.
    pub fn ephemeral(mut self, on: bool) -> Self {
        self.ephemeral = Some(on);
        self
    }

    /// Whether smartvm stages a copy: per-drive `ephemeral` wins; else writable drives are staged
    /// when the global policy is on; read-only drives are used in place.
    pub fn is_staged(&self, ephemeral_writable_drives: bool) -> bool {
        if self.socket.is_some() {
            return false;
        }
        match self.ephemeral {
            Some(explicit) => explicit,
            None => ephemeral_writable_drives && !self.is_read_only,
        }
    }

    pub(crate) fn validate(&self, index: usize, p: &mut Problems) {
        let field = |f: &str| format!("drives[{index}].{f}");
        p.check_id(&field("driveId"), &self.drive_id);
        match &self.socket {
            Some(sock) => p.check_path(&field("socket"), sock, true),
            None => {
                p.check_path(&field("pathOnHost"), &self.path_on_host, true);
                check_drive_file(&field("pathOnHost"), &self.path_on_host, p);
            }
        }
        if let Some(rl) = &self.rate_limiter {
            rl.validate(&field("rateLimiter"), p);
        }
        if let Some(uuid) = &self.partuuid {
            if !self.is_root_device {
                p.push(field("partuuid"), "only applies to the root device");
            } else if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                p.push(field("partuuid"), format!("{uuid:?} is not a partition UUID"));
            }
        }
    }

    /// Firecracker's payload, pointing at `path_on_host` (the staged copy, or the source).
    pub fn payload(&self, path_on_host: &Path) -> DrivePayload {
        DrivePayload {
            drive_id: self.drive_id.clone(),
            path_on_host: self.socket.is_none().then(|| path_on_host.to_path_buf()),
            is_root_device: self.is_root_device,
            is_read_only: self.is_read_only,
            partuuid: self.partuuid.clone(),
            cache_type: self.cache_type,
            io_engine: self.io_engine,
            rate_limiter: self.rate_limiter.as_ref().map(RateLimiter::payload),
            socket: self.socket.clone(),
        }
    }
}

/// A drive is a regular file or a block device: a FIFO would block the start forever, a
/// character device or directory is not a disk.
fn check_drive_file(field: &str, path: &Path, p: &mut Problems) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let t = meta.file_type();
        if !(t.is_file() || t.is_block_device()) {
            let kind = if t.is_fifo() {
                "a FIFO"
            } else if t.is_char_device() {
                "a character device"
            } else if t.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            p.push(field, format!("{} is {kind}: a drive must be a regular file or a block device", path.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rate_limiter::TokenBucket;
    use serde_json::json;

    #[test]
    fn golden_payloads() {
        let d = DriveConfig::new("rootfs", "/src.ext4").root().read_only();
        assert_eq!(
            serde_json::to_value(d.payload(Path::new("/staged.ext4"))).unwrap(),
            json!({"drive_id": "rootfs", "path_on_host": "/staged.ext4", "is_root_device": true, "is_read_only": true})
        );
        let mut full = DriveConfig::new("data", "/d").root();
        full.partuuid = Some("abcd-01".into());
        full.cache_type = Some(CacheType::Writeback);
        full.io_engine = Some(IoEngine::Async);
        full.rate_limiter = Some(RateLimiter { bandwidth: None, ops: Some(TokenBucket::new(100, 1000)) });
        full.ephemeral = Some(false);
        assert_eq!(
            serde_json::to_value(full.payload(Path::new("/d"))).unwrap(),
            json!({"drive_id": "data", "path_on_host": "/d", "is_root_device": true, "is_read_only": false,
                   "partuuid": "abcd-01", "cache_type": "Writeback", "io_engine": "Async",
                   "rate_limiter": {"ops": {"size": 100, "refill_time": 1000}}})
        );
        let upd = DriveUpdatePayload { drive_id: "data".into(), path_on_host: Some("/new".into()), rate_limiter: None };
        assert_eq!(serde_json::to_value(upd).unwrap(), json!({"drive_id": "data", "path_on_host": "/new"}));
    }

    #[test]
    fn staging_policy() {
        let rw = DriveConfig::new("a", "/a");
        let ro = DriveConfig::new("b", "/b").read_only();
        assert!(rw.is_staged(true) && !rw.is_staged(false));
        assert!(!ro.is_staged(true));
        assert!(ro.clone().ephemeral(true).is_staged(false));
        assert!(!rw.ephemeral(false).is_staged(true));
    }
}
