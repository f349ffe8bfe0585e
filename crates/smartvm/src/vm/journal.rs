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
    /// Start time of the Firecracker process (clock ticks since boot), so a recycled pid is
    /// never mistaken for it.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// The program that owns the VM, and its start time.
    #[serde(default)]
    pub owner_pid: Option<i32>,
    /// Start time of the owner.
    #[serde(default)]
    pub owner_start_time: Option<u64>,
    /// The jail (chroot) dir, when the VM runs under the jailer.
    #[serde(default)]
    pub jail_dir: Option<PathBuf>,
    /// Cgroup dirs the jailer created.
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// Drives staged for the VM (for snapshots taken by another process).
    #[serde(default)]
    pub staged: Vec<crate::staging::StagedDrive>,
    /// The VM's configuration.
    #[serde(default)]
    pub config: Option<crate::config::VmConfig>,
}

/// Start time (field 22 of `/proc/<pid>/stat`) of a live, non-zombie process.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn same_process(pid: Option<i32>, start_time: Option<u64>) -> Option<bool> {
    let pid = pid?;
    let now = process_start_time(pid);
    Some(match start_time {
        Some(t) => now == Some(t),
        None => now.is_some(),
    })
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

    /// True when the journaled Firecracker process still runs (same pid and start time; for
    /// journals without a start time, the socket must be on its command line).
    pub fn process_alive(&self) -> bool {
        let Some(pid) = self.pid else { return false };
        if self.start_time.is_some() {
            return same_process(self.pid, self.start_time).unwrap_or(false);
        }
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) => {
                let sock = self.socket.as_os_str().as_encoded_bytes();
                cmdline.split(|&b| b == 0).any(|arg| arg == sock)
            }
            Err(_) => false,
        }
    }

    /// True when the owning program still runs (unknown owners count as alive: never kill
    /// what might be someone else's VM).
    pub fn owner_alive(&self) -> bool {
        same_process(self.owner_pid, self.owner_start_time).unwrap_or(true)
    }

    /// Records the current process as the owner.
    pub fn owned_by_this_process(mut self) -> Self {
        let pid = std::process::id() as i32;
        self.owner_pid = Some(pid);
        self.owner_start_time = process_start_time(pid);
        self
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
        assert!(!VmJournal { pid: None, ..j.clone() }.process_alive());
        let me = std::process::id() as i32;
        let t = process_start_time(me).unwrap();
        assert!(VmJournal { start_time: Some(t), ..j.clone() }.process_alive());
        assert!(!VmJournal { start_time: Some(t + 1), ..j.clone() }.process_alive(), "a recycled pid is not the VM");
        let owned = j.clone().owned_by_this_process();
        assert!(owned.owner_alive());
        assert!(!VmJournal { owner_start_time: Some(t + 1), ..owned }.owner_alive());
        assert!(j.owner_alive(), "unknown owner counts as alive");
    }
}
