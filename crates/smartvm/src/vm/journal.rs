//! The per-VM resource journal: what a VM created on the host, written into its runtime dir so
//! that [`SmartVm::reclaim`](crate::SmartVm::reclaim) can remove what a crashed program left.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the journal inside a VM's runtime dir.
pub const JOURNAL_FILE: &str = "smartvm-journal.json";

/// Resources owned by one VM.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmJournal {
    /// VM id.
    pub vm_id: String,
    /// Firecracker pid.
    pub pid: Option<i32>,
    /// API socket.
    pub socket: PathBuf,
    /// Files created outside the runtime dir (e.g. the vsock socket).
    #[serde(default)]
    pub extra_files: Vec<PathBuf>,
    /// TAP devices created for the VM.
    #[serde(default)]
    pub taps: Vec<String>,
}

impl VmJournal {
    /// Writes the journal atomically into `vm_dir`.
    pub fn write(&self, vm_dir: &Path) -> std::io::Result<()> {
        let tmp = vm_dir.join(format!("{JOURNAL_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, vm_dir.join(JOURNAL_FILE))
    }

    /// Reads the journal of `vm_dir`.
    pub fn read(vm_dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(vm_dir.join(JOURNAL_FILE))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// True when the journaled process still runs with this journal's socket on its command line.
    pub fn process_alive(&self) -> bool {
        let Some(pid) = self.pid else { return false };
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) => {
                let sock = self.socket.as_os_str().as_encoded_bytes();
                cmdline.split(|&b| b == 0).any(|arg| arg == sock)
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_liveness() {
        let dir = tempfile::tempdir().unwrap();
        let j = VmJournal {
            vm_id: "a".into(),
            pid: Some(std::process::id() as i32),
            socket: "/nonexistent.sock".into(),
            ..Default::default()
        };
        j.write(dir.path()).unwrap();
        assert_eq!(VmJournal::read(dir.path()).unwrap(), j);
        // Our own pid is alive but its command line does not carry that socket.
        assert!(!j.process_alive());
        assert!(!VmJournal { pid: None, ..j }.process_alive());
    }
}
