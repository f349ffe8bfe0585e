//! `PUT /snapshot/create` and `PUT /snapshot/load`, whose shapes changed across versions.

use super::problems::NeedsNewerFirecracker;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::version::FirecrackerVersion;

/// Full or Diff (dirty pages only) memory snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum SnapshotType {
    #[default]
    Full,
    Diff,
}

/// Parameters of `create_snapshot`, and Firecracker's `PUT /snapshot/create` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"))]
pub struct SnapshotCreateParams {
    /// Where the VM state file goes.
    #[serde(alias = "snapshot_path")]
    pub snapshot_path: PathBuf,
    /// Where the guest memory file goes.
    #[serde(alias = "mem_file_path")]
    pub mem_file_path: PathBuf,
    /// Full or Diff.
    #[serde(default, alias = "snapshot_type")]
    pub snapshot_type: SnapshotType,
}

/// A TAP to use for an interface of the restored VM (Firecracker v1.12+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"))]
pub struct NetworkOverride {
    /// Interface id as it was in the snapshotted VM.
    #[serde(alias = "iface_id")]
    pub iface_id: String,
    /// TAP device on this host.
    #[serde(alias = "host_dev_name")]
    pub host_dev_name: String,
}

/// Parameters of `load_snapshot`. Unlike the other resources, Firecracker's body for it changed
/// shape across versions, so it is built for one version by [`payload`](Self::payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotLoadParams {
    /// VM state file.
    pub snapshot_path: PathBuf,
    /// Guest memory file.
    pub mem_file_path: PathBuf,
    /// Keep tracking dirty pages so that Diff snapshots can be taken of the restored VM.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Resume the guest right after loading.
    #[serde(default)]
    pub resume_vm: bool,
    /// TAP renames for the restored interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct MemBackend {
    backend_type: &'static str,
    backend_path: PathBuf,
}

/// Firecracker's `/snapshot/load` body, in the shape of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotLoadPayload {
    snapshot_path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_backend: Option<MemBackend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_file_path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_diff_snapshots: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    track_dirty_pages: Option<bool>,
    resume_vm: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    network_overrides: Vec<NetworkOverride>,
}

impl SnapshotLoadParams {
    /// Load `snapshot_path` + `mem_file_path`, paused.
    pub fn new(snapshot_path: impl Into<PathBuf>, mem_file_path: impl Into<PathBuf>) -> Self {
        Self {
            snapshot_path: snapshot_path.into(),
            mem_file_path: mem_file_path.into(),
            track_dirty_pages: false,
            resume_vm: false,
            network_overrides: Vec::new(),
        }
    }

    /// Firecracker's payload for `version`: `mem_backend` (v1.4+) rather than the deprecated
    /// `mem_file_path`; dirty-page tracking is `track_dirty_pages` from v1.13 and
    /// `enable_diff_snapshots` before; `network_overrides` exists from v1.12.
    pub fn payload(&self, version: FirecrackerVersion) -> Result<SnapshotLoadPayload, NeedsNewerFirecracker> {
        NeedsNewerFirecracker::gate(!self.network_overrides.is_empty(), "networkOverrides", (1, 12), version)?;
        let new_dirty_name = version.at_least(1, 13);
        let dirty = self.track_dirty_pages.then_some(true);
        let (mem_backend, mem_file_path) = if version.at_least(1, 4) {
            (Some(MemBackend { backend_type: "File", backend_path: self.mem_file_path.clone() }), None)
        } else {
            (None, Some(self.mem_file_path.clone()))
        };
        Ok(SnapshotLoadPayload {
            snapshot_path: self.snapshot_path.clone(),
            mem_backend,
            mem_file_path,
            enable_diff_snapshots: if new_dirty_name { None } else { dirty },
            track_dirty_pages: if new_dirty_name { dirty } else { None },
            resume_vm: self.resume_vm,
            network_overrides: self.network_overrides.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn load_payload_per_version() {
        let mut p = SnapshotLoadParams::new("/s/vm.state", "/s/vm.mem");
        p.track_dirty_pages = true;
        p.resume_vm = true;
        assert_eq!(
            serde_json::to_value(p.payload(FirecrackerVersion::new(1, 12, 1)).unwrap()).unwrap(),
            json!({"snapshot_path": "/s/vm.state", "mem_backend": {"backend_type": "File", "backend_path": "/s/vm.mem"},
                   "enable_diff_snapshots": true, "resume_vm": true})
        );
        let v13 = serde_json::to_value(p.payload(FirecrackerVersion::new(1, 13, 0)).unwrap()).unwrap();
        assert_eq!(v13["track_dirty_pages"], true);
        assert!(v13.get("enable_diff_snapshots").is_none());
        let v3 = serde_json::to_value(p.payload(FirecrackerVersion::new(1, 3, 0)).unwrap()).unwrap();
        assert_eq!(v3["mem_file_path"], "/s/vm.mem");
        assert!(v3.get("mem_backend").is_none());
        p.network_overrides.push(NetworkOverride { iface_id: "eth0".into(), host_dev_name: "tap9".into() });
        assert!(p.payload(FirecrackerVersion::new(1, 11, 0)).is_err());
        assert_eq!(
            serde_json::to_value(p.payload(FirecrackerVersion::new(1, 12, 0)).unwrap()).unwrap()["network_overrides"],
            json!([{"iface_id": "eth0", "host_dev_name": "tap9"}])
        );
    }

    #[test]
    fn create_payload() {
        let c = SnapshotCreateParams {
            snapshot_path: "/a".into(),
            mem_file_path: "/b".into(),
            snapshot_type: SnapshotType::Diff,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"snapshot_path": "/a", "mem_file_path": "/b", "snapshot_type": "Diff"})
        );
    }
}
