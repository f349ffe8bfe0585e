//! `PUT /drives/{id}` (pre-boot) and `PATCH /drives/{id}` (hot update).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::rate_limiter::RateLimiter;
use super::resource::{FirecrackerResource, Validate};

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

/// A block device: smartvm's input and Firecracker's `PUT /drives/{id}` body in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct DriveConfig {
    /// Id, `[A-Za-z0-9_]`, unique within the VM.
    #[serde(alias = "drive_id")]
    pub drive_id: String,
    /// Backing file on the host (absent only for vhost-user drives).
    #[serde(default, skip_serializing_if = "is_empty_path", alias = "path_on_host")]
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
    /// Never sent to Firecracker: the resolved drive Firecracker gets has it consumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
}

fn is_empty_path(path: &Path) -> bool {
    path.as_os_str().is_empty()
}

/// Firecracker's `PATCH /drives/{id}` body: a new backing file or rate limiter after boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveUpdate {
    /// The drive.
    pub drive_id: String,
    /// New backing file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    /// New rate limiter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl FirecrackerResource for DriveConfig {
    const API_PATH: &'static str = "/drives";
    const REFUSED_AS: &'static str = "BlockDevice";
    fn api_path(&self) -> String {
        format!("{}/{}", Self::API_PATH, self.drive_id)
    }
}

impl Validate for DriveConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        let field = |f: &str| format!("{at}.{f}");
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

    /// The drive as Firecracker gets it: backed by `path_on_host` (the staged copy, or the
    /// source), smartvm's own `ephemeral` consumed.
    pub fn resolved(&self, path_on_host: &Path) -> Self {
        let path_on_host = if self.socket.is_some() { PathBuf::new() } else { path_on_host.to_path_buf() };
        Self { path_on_host, ephemeral: None, ..self.clone() }
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
            serde_json::to_value(d.resolved(Path::new("/staged.ext4"))).unwrap(),
            json!({"drive_id": "rootfs", "path_on_host": "/staged.ext4", "is_root_device": true, "is_read_only": true})
        );
        let mut full = DriveConfig::new("data", "/d").root();
        full.partuuid = Some("abcd-01".into());
        full.cache_type = Some(CacheType::Writeback);
        full.io_engine = Some(IoEngine::Async);
        full.rate_limiter = Some(RateLimiter { bandwidth: None, ops: Some(TokenBucket::new(100, 1000)) });
        full.ephemeral = Some(false);
        assert_eq!(
            serde_json::to_value(full.resolved(Path::new("/d"))).unwrap(),
            json!({"drive_id": "data", "path_on_host": "/d", "is_root_device": true, "is_read_only": false,
                   "partuuid": "abcd-01", "cache_type": "Writeback", "io_engine": "Async",
                   "rate_limiter": {"ops": {"size": 100, "refill_time": 1000}}})
        );
        assert_eq!(full.api_path(), "/drives/data");
        let upd = DriveUpdate { drive_id: "data".into(), path_on_host: Some("/new".into()), rate_limiter: None };
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
