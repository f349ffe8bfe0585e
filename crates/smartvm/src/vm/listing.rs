//! The VMs journaled in a runtime dir, whoever owns them (this program, a host agent, a
//! containerd shim): what `smartvm ps` shows beside the agent's own.

use std::path::Path;

use crate::host::VmJournal;

/// A VM as its journal describes it.
#[derive(Debug, Clone)]
pub struct JournaledVm {
    /// The journal (trusted: root-owned, not writable by others).
    pub journal: VmJournal,
    /// Its Firecracker process runs (and is the one recorded).
    pub running: bool,
    /// The owner's pid and command name, while the owner runs.
    pub owner: Option<(i32, String)>,
}

/// The VMs journaled in `runtime_dir`, by id; entries without a trusted journal (including
/// VM dirs still being prepared) are left out.
pub fn journaled_vms(runtime_dir: &Path) -> Vec<JournaledVm> {
    let Ok(entries) = std::fs::read_dir(runtime_dir) else { return Vec::new() };
    let mut vms: Vec<JournaledVm> = entries
        .flatten()
        // Hidden entries are infrastructure or VM dirs still being prepared (`.new-…`).
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| VmJournal::read(&e.path()).ok())
        .map(|journal| {
            let owner = journal
                .owner_pid
                .filter(|_| journal.owner_alive())
                .and_then(|pid| Some((pid, std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?)))
                .map(|(pid, comm)| (pid, comm.trim_end().to_string()));
            JournaledVm { running: journal.process_alive(), owner, journal }
        })
        .collect();
    vms.sort_by(|a, b| a.journal.vm_id.cmp(&b.journal.vm_id));
    vms
}
