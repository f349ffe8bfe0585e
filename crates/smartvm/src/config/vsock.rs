//! `PUT /vsock`: the virtio-vsock device and its host Unix socket.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::resource::{FirecrackerResource, Validate};

/// A vsock device; the host side is a Unix socket Firecracker creates at `uds_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct VsockConfig {
    /// Guest context id, at least 3.
    #[serde(alias = "guest_cid")]
    pub guest_cid: u32,
    /// Host socket path (absolute; its directory must exist; the file must not).
    #[serde(alias = "uds_path")]
    pub uds_path: PathBuf,
    /// Deprecated by Firecracker; accepted on input and never sent.
    #[serde(default, skip_serializing, alias = "vsock_id")]
    pub vsock_id: Option<String>,
}

impl VsockConfig {
    /// A vsock device with `cid`, its host socket at `uds_path`.
    pub fn new(cid: u32, uds_path: impl Into<PathBuf>) -> Self {
        Self { guest_cid: cid, uds_path: uds_path.into(), vsock_id: None }
    }
}

impl FirecrackerResource for VsockConfig {
    const API_PATH: &'static str = "/vsock";
    const REFUSED_AS: &'static str = "VsockDevice";
}

impl Validate for VsockConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        if self.guest_cid < 3 {
            p.push(format!("{at}.guestCid"), format!("{} is reserved; use 3 or more", self.guest_cid));
        }
        let uds = format!("{at}.udsPath");
        p.check_path(&uds, &self.uds_path, false);
        if self.uds_path.is_absolute() {
            match self.uds_path.parent() {
                Some(dir) if dir.is_dir() => {}
                _ => p.push(uds, format!("directory of {} does not exist", self.uds_path.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden_and_validation() {
        let v: VsockConfig =
            serde_json::from_value(json!({"vsock_id": "x", "guest_cid": 3, "uds_path": "/tmp/v.sock"})).unwrap();
        assert_eq!(serde_json::to_value(&v).unwrap(), json!({"guest_cid": 3, "uds_path": "/tmp/v.sock"}));
        let mut p = Problems::default();
        VsockConfig::new(2, "/no/such/dir/v.sock").validate("vsock", &mut p);
        assert_eq!(p.0.len(), 2);
    }
}
