//! Reclaiming what crashed programs left in a runtime dir: every VM dir whose journal is
//! trusted, whose owner is gone (or whose process is gone), is unwound through the same
//! [`unwind`] as a normal stop. Journals that cannot be trusted are reported, never acted on.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::ledger::{unwind, JournalError, Resource, UnwindFailure, UnwindScope, VmJournal, NEW_DIR_PREFIX};
use crate::trust::confine::{remove_beneath, Removal};

/// A half-created VM dir with no journal yet is removed once it is this old.
const STALE_NEW_DIR: Duration = Duration::from_secs(60);

/// What [`reclaim_runtime_dir`] did.
#[derive(Debug, Default)]
pub struct ReclaimReport {
    /// Ids of VMs whose leftovers were removed.
    pub reclaimed: Vec<String>,
    /// Entries of the runtime dir that were not acted on, and why.
    pub rejected: Vec<RejectedEntry>,
    /// Resources that could not be released (they stay journaled for the next reclaim).
    pub failures: Vec<UnwindFailure>,
    /// Bridges and NAT tables removed (their creator gone, no VM left to need them).
    pub network: Vec<String>,
    /// Temporary dirs of base-image pulls that were killed, removed.
    pub partial_downloads: Vec<PathBuf>,
    /// Bridges or NAT tables that could not be removed.
    #[cfg(feature = "network")]
    pub network_failures: Vec<crate::network::NetworkError>,
}

impl ReclaimReport {
    /// True when there was nothing to do.
    pub fn is_empty(&self) -> bool {
        self.reclaimed.is_empty()
            && self.rejected.is_empty()
            && self.failures.is_empty()
            && self.network.is_empty()
            && self.partial_downloads.is_empty()
            && self.network_failures_is_empty()
    }

    #[cfg(feature = "network")]
    fn network_failures_is_empty(&self) -> bool {
        self.network_failures.is_empty()
    }

    #[cfg(not(feature = "network"))]
    fn network_failures_is_empty(&self) -> bool {
        true
    }
}

/// True while `runtime_dir` holds VM dirs (entries not starting with `.`).
pub fn has_vm_dirs(runtime_dir: &Path) -> bool {
    std::fs::read_dir(runtime_dir)
        .map(|rd| rd.flatten().any(|e| !e.file_name().to_string_lossy().starts_with('.')))
        .unwrap_or(false)
}

/// An entry of the runtime dir that reclaim left alone.
#[derive(Debug, thiserror::Error)]
#[error("left {} alone", path.display())]
pub struct RejectedEntry {
    /// The entry.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub reason: RejectReason,
}

/// Why an entry was left alone.
#[derive(Debug, thiserror::Error)]
pub enum RejectReason {
    /// Its journal is missing, unreadable, invalid or not trusted.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Not a directory (e.g. a symlink planted in the runtime dir).
    #[error("not a directory")]
    NotADirectory,
    /// The journal describes another dir.
    #[error("the journal names another runtime dir")]
    ForeignJournal,
}

/// Reclaims the VM dirs in `scope.runtime_dir` except `owned` (this program's live VMs).
pub fn reclaim_runtime_dir(scope: &UnwindScope, owned: &[PathBuf]) -> std::io::Result<ReclaimReport> {
    let mut report = ReclaimReport::default();
    let entries = match std::fs::read_dir(&scope.runtime_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with('.');
        if owned.contains(&dir) || (hidden && !name.to_string_lossy().starts_with(NEW_DIR_PREFIX)) {
            continue; // this program's VMs, and infrastructure (`.drives`, `.network`)
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir {
            report.rejected.push(RejectedEntry { path: dir, reason: RejectReason::NotADirectory });
            continue;
        }
        if name.to_string_lossy().starts_with(NEW_DIR_PREFIX) {
            reclaim_new_dir(scope, &dir, &mut report);
            continue;
        }
        reclaim_vm_dir(scope, &dir, Spare::LiveDetached, &mut report);
    }
    Ok(report)
}

/// Whether a reclaim leaves a detached VM whose process runs alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spare {
    /// Yes: it lives on without its owner (a host agent's VM between two agents).
    LiveDetached,
    /// No: it is killed and unwound (an agent that cannot take it over, so that no VM runs
    /// that nothing answers for).
    Nothing,
}

/// Reclaims one VM dir of `scope.runtime_dir` (see [`Spare`]).
pub fn reclaim_one(scope: &UnwindScope, dir: &Path, spare: Spare) -> ReclaimReport {
    let mut report = ReclaimReport::default();
    reclaim_vm_dir(scope, dir, spare, &mut report);
    report
}

/// A VM dir being prepared (see [`Ledger::create`](super::ledger::Ledger)): nothing but the dir
/// and its journal exist yet; removed when its owner is gone (or, journal-less, when stale).
fn reclaim_new_dir(scope: &UnwindScope, dir: &Path, report: &mut ReclaimReport) {
    let abandoned = match VmJournal::read(dir) {
        Ok(j) => !j.owner_alive(),
        Err(_) => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STALE_NEW_DIR),
    };
    if abandoned {
        if let Err(e) = remove_beneath(&scope.runtime_dir, dir, Removal::Tree) {
            let resource = Resource::RuntimeDir { path: dir.to_path_buf() };
            report.failures.push(UnwindFailure { resource, error: e.into() });
        }
    }
}

fn reclaim_vm_dir(scope: &UnwindScope, dir: &Path, spare: Spare, report: &mut ReclaimReport) {
    let mut journal = match VmJournal::read(dir) {
        Ok(j) => j,
        Err(e) => {
            report.rejected.push(RejectedEntry { path: dir.to_path_buf(), reason: e.into() });
            return;
        }
    };
    let own_dir = Resource::RuntimeDir { path: dir.to_path_buf() };
    match journal.resources.iter().find(|r| matches!(r, Resource::RuntimeDir { .. })) {
        Some(r) if *r != own_dir => {
            report.rejected.push(RejectedEntry { path: dir.to_path_buf(), reason: RejectReason::ForeignJournal });
            return;
        }
        Some(_) => {}
        None => journal.resources.insert(0, own_dir),
    }
    // A VM whose owner runs is spared while its process runs or is still being spawned (no
    // pid journaled yet); an orphan (owner gone) is killed and unwound.
    // (With nothing spared, only another program's ownership counts: this one gave the VM up.)
    let owner_elsewhere = spare == Spare::LiveDetached || journal.owner_pid != Some(std::process::id() as i32);
    if owner_elsewhere && journal.owner_alive() && (journal.pid().is_none() || journal.process_alive()) {
        return;
    }
    // A detached VM (a host agent's) lives on without its owner while its process runs.
    if spare == Spare::LiveDetached && journal.detached && journal.process_alive() {
        return;
    }
    let failures = unwind(&journal.resources, scope);
    if failures.is_empty() {
        report.reclaimed.push(journal.vm_id);
        return;
    }
    journal.keep_failed(&failures, dir);
    report.failures.extend(failures);
}
