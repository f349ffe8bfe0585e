//! The resource ledger: everything a VM acquires on the host, journaled *before* it is acquired,
//! and the one reverse unwind that removes it — for `stop`/`cleanup`, for `Drop`, for a failed
//! start and for [`SmartVm::reclaim`](crate::SmartVm::reclaim) after a crash.
//!
//! The journal (`smartvm-journal.json`, mode `0600`) lives in the VM's runtime dir, which is
//! created together with its first journal (a private temporary dir renamed into place), so at
//! any instant a crash leaves either nothing or a journal naming everything that may exist.
//!
//! The unwind trusts nothing it reads: paths are removed only beneath smartvm's runtime dir,
//! jail base or cgroup root without following symlinks ([`confine`](crate::trust::confine)); a
//! process is killed only when its start time, executable and command line all match what was
//! recorded at spawn; a TAP is removed only when its name has smartvm's prefix and it is a TAP.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::{process_start_time, ProcessRecord};
pub use super::resource::{is_smartvm_tap_name, unwind, Resource, UnwindFailure, UnwindScope};
pub use super::unwind_error::UnwindError;

/// File name of the journal inside a VM's runtime dir.
pub const JOURNAL_FILE: &str = "smartvm-journal.json";
/// Journals larger than this are not read.
const MAX_JOURNAL_BYTES: u64 = 4 << 20;
/// Prefix of the private dirs a VM dir is prepared in before it is renamed into place.
pub(crate) const NEW_DIR_PREFIX: &str = ".new-";

/// A VM's journal: who owns it and what it acquired.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmJournal {
    /// VM id.
    pub vm_id: String,
    /// API socket (as seen from the host).
    pub socket: PathBuf,
    /// The program that owns the VM.
    #[serde(default)]
    pub owner_pid: Option<i32>,
    /// Start time of the owner.
    #[serde(default)]
    pub owner_start_time: Option<u64>,
    /// The VM's configuration.
    #[serde(default)]
    pub config: Option<crate::config::VmConfig>,
    /// The VM outlives its owner (a host agent's): spared by reclaim while its process runs.
    #[serde(default)]
    pub detached: bool,
    /// The pool that holds this VM warm, until it is handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// What the VM acquired, in order.
    #[serde(default)]
    pub resources: Vec<Resource>,
}

/// Why a journal was not acted on.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// No journal, or it could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The journal path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The journal or its dir could have been written by another user.
    #[error("journal {} is not trusted", path.display())]
    Untrusted {
        /// The journal path.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::trust::TrustError,
    },
    /// Not a journal.
    #[error("{} is not a valid journal", path.display())]
    Invalid {
        /// The journal path.
        path: PathBuf,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl VmJournal {
    /// Writes the journal durably into `vm_dir` as its only version: a `0600` temporary file,
    /// fsync, rename.
    pub fn write(&self, vm_dir: &Path) -> std::io::Result<()> {
        let tmp = vm_dir.join(format!("{JOURNAL_FILE}.tmp"));
        self.write_synced(std::fs::OpenOptions::new().write(true).create(true).truncate(true), &tmp)?;
        std::fs::rename(&tmp, vm_dir.join(JOURNAL_FILE))
    }

    /// Writes the journal durably as the first version in `new_dir`, a private dir that is not
    /// yet in place (no reader can see a partial file there).
    fn write_first(&self, new_dir: &Path) -> std::io::Result<()> {
        self.write_synced(std::fs::OpenOptions::new().write(true).create_new(true), &new_dir.join(JOURNAL_FILE))
    }

    /// The journal as the whole content of a `0600` file opened at `path` with `how`, synced.
    fn write_synced(&self, how: &mut std::fs::OpenOptions, path: &Path) -> std::io::Result<()> {
        let mut f = how.mode(0o600).open(path)?;
        f.write_all(&self.line()?)?;
        f.sync_data()
    }

    /// Appends the journal durably to the one in `vm_dir` as its newest version (one line,
    /// one `write`): on the start path this costs no new file and no rename. A line cut short
    /// by a power loss is ignored by [`read`](Self::read), which then takes the version
    /// before, written before the resource the cut line would have added was acquired.
    pub fn append(&self, vm_dir: &Path) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(vm_dir.join(JOURNAL_FILE))?;
        f.write_all(&self.line()?)?;
        f.sync_data()
    }

    /// The journal as one line of JSON.
    fn line(&self) -> std::io::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// The newest complete version in `bytes` (the last line that parses).
    fn newest(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut lines = bytes.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).rev();
        let last = lines.next().unwrap_or_default();
        serde_json::from_slice(last).or_else(|e| lines.next().map_or(Err(e), serde_json::from_slice))
    }

    /// Reads the journal of `vm_dir` after checking that neither it nor its dir could have
    /// been written by another user (owner root or the current user, no group/other write).
    pub fn read(vm_dir: &Path) -> Result<Self, JournalError> {
        let path = vm_dir.join(JOURNAL_FILE);
        crate::trust::check(&path, crate::trust::Expect::File)
            .map_err(|source| JournalError::Untrusted { path: path.clone(), source })?;
        let read = |source| JournalError::Read { path: path.clone(), source };
        let file = std::fs::File::open(&path).map_err(read)?;
        if file.metadata().map_err(read)?.size() > MAX_JOURNAL_BYTES {
            return Err(read(std::io::Error::other("journal too large")));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_JOURNAL_BYTES), &mut bytes).map_err(read)?;
        Self::newest(&bytes).map_err(|source| JournalError::Invalid { path, source })
    }

    /// After an unwind with `failures`: keeps (and rewrites into `dir`) only the runtime dir and
    /// what could not be released, for the next reclaim to try again.
    pub fn keep_failed(&mut self, failures: &[UnwindFailure], dir: &Path) {
        self.resources
            .retain(|r| matches!(r, Resource::RuntimeDir { .. }) || failures.iter().any(|f| &f.resource == r));
        let _ = self.write(dir);
    }

    /// Records the current process as the owner.
    pub fn owned_by_this_process(mut self) -> Self {
        let pid = std::process::id() as i32;
        self.owner_pid = Some(pid);
        self.owner_start_time = super::identity::this_process_start_time();
        self
    }

    /// The Firecracker process record, once journaled.
    pub fn process(&self) -> Option<&ProcessRecord> {
        self.resources.iter().find_map(|r| match r {
            Resource::Process(p) => Some(p),
            _ => None,
        })
    }

    /// The Firecracker pid, once spawned.
    pub fn pid(&self) -> Option<i32> {
        self.process().and_then(|p| p.pid)
    }

    /// Staged drive copies.
    pub fn staged(&self) -> Vec<crate::staging::StagedDrive> {
        self.resources
            .iter()
            .filter_map(|r| match r {
                Resource::StagedDrive(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// The jail dir of a jailed VM.
    pub fn jail_dir(&self) -> Option<&Path> {
        self.resources.iter().find_map(|r| match r {
            Resource::JailDir { path } => Some(path.as_path()),
            _ => None,
        })
    }

    /// TAP names.
    pub fn taps(&self) -> Vec<&str> {
        self.resources
            .iter()
            .filter_map(|r| match r {
                Resource::Tap { name } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// True when the journaled Firecracker process still runs and is the one recorded.
    pub fn process_alive(&self) -> bool {
        self.process().is_some_and(ProcessRecord::is_running)
    }

    /// True when the owning program still runs (unknown owners count as alive: never kill
    /// what might be someone else's VM).
    pub fn owner_alive(&self) -> bool {
        match (self.owner_pid, self.owner_start_time) {
            (Some(pid), Some(t)) => process_start_time(pid) == Some(t),
            (Some(pid), None) => process_start_time(pid).is_some(),
            _ => true,
        }
    }
}

/// A VM's ledger in the process that runs it: the journal in memory, written before every
/// acquisition.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    journal: VmJournal,
    /// Versions appended since the journal was last written whole.
    appended: u32,
}

/// Appended versions after which the journal is written whole again, bounding its size.
const APPENDS_PER_REWRITE: u32 = 32;

impl Ledger {
    /// Creates `vm_dir` (`0700`) holding `journal` (to which the dir itself is added as the first
    /// resource): prepared in a private temporary dir and renamed into place, so the dir never
    /// exists without its journal. `EEXIST` when a VM dir of that name exists.
    pub(crate) fn create(vm_dir: &Path, mut journal: VmJournal) -> std::io::Result<Self> {
        let parent = vm_dir.parent().ok_or_else(|| std::io::Error::other("VM dir has no parent"))?;
        let tmp = parent.join(format!("{NEW_DIR_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        journal.resources = vec![Resource::RuntimeDir { path: vm_dir.to_path_buf() }];
        // The dir is private and not yet in place: its journal needs no temporary of its own.
        let placed = journal.write_first(&tmp).and_then(|()| rename_noreplace(&tmp, vm_dir));
        if let Err(e) = placed {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Ok(Self { dir: vm_dir.to_path_buf(), journal, appended: 0 })
    }

    /// The ledger of an existing VM dir, taken over from its journal (a host agent adopting a
    /// detached VM another agent started); the journal now names this process as the owner.
    pub(crate) fn adopt(vm_dir: &Path, journal: VmJournal) -> std::io::Result<Self> {
        let journal = journal.owned_by_this_process();
        journal.write(vm_dir)?;
        Ok(Self { dir: vm_dir.to_path_buf(), journal, appended: 0 })
    }

    /// Journals `resource` durably; call before acquiring it.
    pub fn record(&mut self, resource: Resource) -> std::io::Result<()> {
        self.journal.resources.push(resource);
        self.save()
    }

    /// The journal's newest version onto disk: appended, or rewritten whole now and then.
    fn save(&mut self) -> std::io::Result<()> {
        if self.appended >= APPENDS_PER_REWRITE {
            self.journal.write(&self.dir)?;
            self.appended = 0;
        } else {
            self.journal.append(&self.dir)?;
            self.appended += 1;
        }
        Ok(())
    }

    /// Completes the process record with the spawned pid and its start time (read from
    /// `/proc` unless known).
    pub(crate) fn process_spawned(&mut self, pid: i32, start_time: Option<u64>) -> std::io::Result<()> {
        let start_time = start_time.or_else(|| process_start_time(pid));
        for r in &mut self.journal.resources {
            if let Resource::Process(p) = r {
                p.pid = Some(pid);
                p.start_time = start_time;
            }
        }
        self.save()
    }

    /// A pooled VM is handed out with `config`: journaled as that config's VM, no longer the
    /// pool's.
    pub(crate) fn checked_out(&mut self, config: crate::config::VmConfig) -> std::io::Result<()> {
        self.journal.config = Some(config);
        self.journal.pool = None;
        self.journal.write(&self.dir)?;
        self.appended = 0;
        Ok(())
    }

    /// The journal as written.
    pub fn journal(&self) -> &VmJournal {
        &self.journal
    }

    /// Unwinds everything in reverse (see [`unwind`]); afterwards the ledger is empty, unless
    /// something could not be released: then the journal keeps it for `reclaim`.
    pub(crate) fn unwind(&mut self, scope: &UnwindScope) -> Vec<UnwindFailure> {
        let failures = unwind(&self.journal.resources, scope);
        if failures.is_empty() {
            self.journal.resources.clear();
        } else {
            self.journal.keep_failed(&failures, &self.dir);
        }
        failures
    }
}

/// `rename(2)` that fails with `EEXIST` instead of replacing an (empty) existing dir.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths; AT_FDCWD for both directory fds.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scope(root: &Path) -> UnwindScope {
        UnwindScope { runtime_dir: root.to_path_buf(), jail_base: root.join("jails"), owner: false }
    }

    #[test]
    fn the_dir_appears_with_its_journal_and_unwinds_in_reverse() {
        let root = tempfile::tempdir().unwrap();
        let vm_dir = root.path().join("vm1");
        let mut ledger = Ledger::create(&vm_dir, VmJournal { vm_id: "vm1".into(), ..Default::default() }).unwrap();
        assert_eq!(std::fs::metadata(&vm_dir).unwrap().mode() & 0o777, 0o700);
        let j = std::fs::metadata(vm_dir.join(JOURNAL_FILE)).unwrap();
        assert_eq!(j.mode() & 0o777, 0o600);
        let staged = vm_dir.join("drives/root.img");
        ledger
            .record(Resource::StagedDrive(crate::staging::StagedDrive {
                drive_id: "root".into(),
                source: "/img".into(),
                staged: staged.clone(),
            }))
            .unwrap();
        assert_eq!(VmJournal::read(&vm_dir).unwrap().resources.len(), 2, "journaled before acquisition");
        std::fs::create_dir(vm_dir.join("drives")).unwrap();
        std::fs::write(&staged, b"x").unwrap();
        let err = Ledger::create(&vm_dir, VmJournal::default()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "an existing VM dir is never replaced");
        assert!(ledger.unwind(&scope(root.path())).is_empty());
        assert!(!vm_dir.exists());
        assert!(ledger.unwind(&scope(root.path())).is_empty(), "unwinding twice is harmless");
        let leftovers: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "no temporary dir left");
    }

    #[test]
    fn versions_are_appended_a_torn_last_line_is_ignored_and_the_file_stays_bounded() {
        let root = tempfile::tempdir().unwrap();
        let vm_dir = root.path().join("vm2");
        let mut ledger = Ledger::create(&vm_dir, VmJournal { vm_id: "vm2".into(), ..Default::default() }).unwrap();
        let journal = vm_dir.join(JOURNAL_FILE);
        let sock = |n: u32| Resource::Socket { path: vm_dir.join(format!("s{n}.sock")) };
        ledger.record(sock(0)).unwrap();
        ledger.record(sock(1)).unwrap();
        let text = std::fs::read_to_string(&journal).unwrap();
        assert_eq!(text.lines().count(), 3, "one line per version: {text}");
        assert_eq!(VmJournal::read(&vm_dir).unwrap().resources.len(), 3, "the newest version counts");
        // A power loss in the middle of an append: the version before is what was acquired.
        std::fs::OpenOptions::new().append(true).open(&journal).unwrap().write_all(b"{\"vmId\":\"vm2\",\"res").unwrap();
        assert_eq!(VmJournal::read(&vm_dir).unwrap().resources.len(), 3);
        std::fs::write(&journal, b"not json\n").unwrap();
        assert!(matches!(VmJournal::read(&vm_dir), Err(JournalError::Invalid { .. })));
        ledger.journal.write(&vm_dir).unwrap();
        for n in 2..(2 * APPENDS_PER_REWRITE + 5) {
            ledger.record(sock(n)).unwrap();
        }
        let lines = std::fs::read_to_string(&journal).unwrap().lines().count() as u32;
        assert!(lines <= APPENDS_PER_REWRITE + 1, "rewritten whole now and then: {lines} lines");
        let resources = VmJournal::read(&vm_dir).unwrap().resources.len() as u32;
        assert_eq!(resources, 3 + (2 * APPENDS_PER_REWRITE + 3), "the dir, s0, s1, then s2 to the last");
        assert_eq!(std::fs::metadata(&journal).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn forged_entries_are_refused_and_reported() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let forged = vec![
            Resource::RuntimeDir { path: outside.path().to_path_buf() },
            Resource::JailDir { path: outside.path().to_path_buf() },
            Resource::Socket { path: victim.clone() },
            Resource::Tap { name: "lo".into() },
            Resource::Cgroup { path: outside.path().to_path_buf() },
        ];
        let failures = unwind(&forged, &scope(root.path()));
        assert_eq!(failures.len(), 4, "{failures:?}");
        assert!(victim.exists(), "nothing outside the scope was touched");
        assert!(failures.iter().any(|f| matches!(f.error, UnwindError::NotOurs("not a smartvm TAP name"))));
    }

    #[test]
    fn untrusted_journals_are_not_read() {
        let root = tempfile::tempdir().unwrap();
        let vm_dir = root.path().join("vm");
        Ledger::create(&vm_dir, VmJournal { vm_id: "vm".into(), ..Default::default() }).unwrap();
        VmJournal::read(&vm_dir).unwrap();
        let journal = vm_dir.join(JOURNAL_FILE);
        std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(VmJournal::read(&vm_dir), Err(JournalError::Untrusted { .. })));
        std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&vm_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(VmJournal::read(&vm_dir), Err(JournalError::Untrusted { .. })), "writable dir");
    }
}
