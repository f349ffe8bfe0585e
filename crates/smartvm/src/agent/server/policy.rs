//! What the agent allows its callers: the paths a group member may name, and the bounds that
//! keep the agent answering during any burst.
//!
//! Caller classes: root and the agent's own user ([`Caller::Owner`]) may name any host path;
//! anyone else the socket admits (members of the `smartvm` group: [`Caller::Member`]) may name
//! none — no kernel, initrd, drive, log, metrics or vsock path, no snapshot dir — except under
//! a directory the operator allows ([`AgentPolicy::allowed_paths`], `serve --allow-path`),
//! checked after resolving symlinks, and only where every directory on the way is writable by
//! root or the agent's user alone (StrictModes): so no member can swap a checked file for a link
//! between the check and Firecracker's open. Base images the agent fetches and caches are
//! always allowed. A refusal is 403 `PERMISSION_DENIED` naming the field; nothing is created.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::{HostPathUse, VmConfig};
use crate::error::{Result, SmartVmError};

/// Who is calling, for the agent's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Root or the agent's own user: may name host paths.
    Owner,
    /// Another user the socket admits (the `smartvm` group): only allowed paths.
    Member,
}

/// The agent's policy (see the module docs).
#[derive(Debug, Clone)]
pub struct AgentPolicy {
    /// The group whose members may use the agent besides root and its own user (default
    /// [`AGENT_GROUP`](super::AGENT_GROUP)); the socket is `0660` for it when it exists.
    pub group: String,
    /// Directories under which members may name host paths (none by default).
    pub allowed_paths: Vec<PathBuf>,
    /// Most VMs the agent holds, live and ended (default 1024).
    pub max_vms: usize,
    /// Starts (creates, restores) that run at once (default 8).
    pub max_starts: usize,
    /// Starts that may wait for one of those; past them a request is 429 `BUSY` (default 64).
    pub max_queued_starts: usize,
    /// Most VMs one restore may start (`count`, default 64; more is 422).
    pub max_count: usize,
}

impl Default for AgentPolicy {
    fn default() -> Self {
        Self {
            group: super::AGENT_GROUP.into(),
            allowed_paths: Vec::new(),
            max_vms: 1024,
            max_starts: 8,
            max_queued_starts: 64,
            max_count: 64,
        }
    }
}

/// The place `path` really is: symlinks resolved as far as the path exists, the rest appended
/// (a file about to be created, or a path that does not exist: validation refuses those).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let mut rest = Vec::new();
    let mut cur = path;
    while let Some(parent) = cur.parent() {
        rest.push(cur.file_name().map(PathBuf::from).unwrap_or_default());
        if let Ok(real) = std::fs::canonicalize(parent) {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        cur = parent;
    }
    path.to_path_buf()
}

/// Why a member may not use `hp`, given the resolved `allowed` dirs (`None`: it may).
fn member_refusal(hp: &crate::config::HostPath<'_>, allowed: &[PathBuf]) -> Option<String> {
    let real = resolved(hp.path);
    if !hp.path.is_absolute() || !allowed.iter().any(|dir| real.starts_with(dir) && real != *dir) {
        let what = match hp.used {
            HostPathUse::Reads => "read",
            HostPathUse::Creates => "create",
        };
        let path = hp.path.display();
        return Some(format!(
            "{path} is not under a directory this agent lets its group {what} files in (serve --allow-path)"
        ));
    }
    // Every directory on the way is the owner's alone: nobody else can swap a checked file for
    // a link between this check and Firecracker's open.
    if let Some(Err(e)) = real.parent().map(|p| crate::trust::check(p, crate::trust::Expect::Directory)) {
        return Some(format!("{} is in a directory others may write: {e}", hp.path.display()));
    }
    // A member's output never lands on a file that is there already (an operator's image, say).
    if hp.used == HostPathUse::Creates && std::fs::symlink_metadata(hp.path).is_ok() {
        return Some(format!("{} exists: a member's output must be a new file", hp.path.display()));
    }
    None
}

impl AgentPolicy {
    /// Refuses a config that names a host path `caller` may not use.
    pub fn check_config(&self, caller: Caller, config: &VmConfig) -> Result<()> {
        if caller == Caller::Owner {
            return Ok(());
        }
        let allowed: Vec<PathBuf> = self.allowed_paths.iter().filter_map(|d| std::fs::canonicalize(d).ok()).collect();
        for hp in config.host_paths() {
            if let Some(reason) = member_refusal(&hp, &allowed) {
                return Err(SmartVmError::PermissionDenied { field: hp.field, reason });
            }
        }
        Ok(())
    }

    /// Refuses host paths (snapshot and bundle dirs) to anyone but the owner.
    pub fn check_owner(&self, caller: Caller, field: &str) -> Result<()> {
        match caller {
            Caller::Owner => Ok(()),
            Caller::Member => Err(SmartVmError::PermissionDenied {
                field: field.into(),
                reason: "snapshots name host paths: root or the agent's own user only".into(),
            }),
        }
    }
}

/// Starts in flight, bounded, with a bounded queue in front.
pub(super) struct StartGate {
    running: Semaphore,
    max_running: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl StartGate {
    pub(super) fn new(policy: &AgentPolicy) -> Self {
        let max_running = policy.max_starts.max(1);
        Self {
            running: Semaphore::new(max_running),
            max_running,
            waiting: AtomicUsize::new(0),
            max_waiting: policy.max_queued_starts,
        }
    }

    /// A turn for `vms` starts (at most all of them), waiting in the queue if it has room;
    /// `BUSY` if it has none.
    pub(super) async fn enter(&self, vms: usize) -> Result<SemaphorePermit<'_>> {
        let want = vms.clamp(1, self.max_running) as u32;
        if let Ok(permit) = self.running.try_acquire_many(want) {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SmartVmError::Busy(format!("{} starts wait already", self.max_waiting)));
        }
        let permit = self.running.acquire_many(want).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit.map_err(|_| SmartVmError::Busy("the agent is shutting down".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_past_the_queue_are_busy() {
        let gate = StartGate::new(&AgentPolicy { max_starts: 1, max_queued_starts: 1, ..AgentPolicy::default() });
        let first = gate.enter(1).await.unwrap();
        let mut queued = Box::pin(gate.enter(1));
        assert!(futures_util::FutureExt::now_or_never(queued.as_mut()).is_none(), "the second waits");
        assert_eq!(gate.enter(1).await.unwrap_err().code(), "BUSY", "the third finds the queue full");
        drop(first);
        drop(queued.await.unwrap());
    }

    #[test]
    fn members_name_only_allowed_paths() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("images");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("vmlinux"), b"k").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", allowed.join("sneaky")).unwrap();
        let policy = AgentPolicy { allowed_paths: vec![allowed.clone()], ..AgentPolicy::default() };
        let ok = VmConfig::new(allowed.join("vmlinux"));
        policy.check_config(Caller::Member, &ok).unwrap();
        for (config, field) in [
            (VmConfig::new("/etc/shadow"), "bootSource.kernelImagePath"),
            (VmConfig::new(allowed.join("sneaky")), "bootSource.kernelImagePath"),
            (VmConfig::new(allowed.join("../images/../../etc/passwd")), "bootSource.kernelImagePath"),
            (
                VmConfig::new(allowed.join("vmlinux")).with_drive(crate::config::DriveConfig::new("d", "/etc/shadow")),
                "drives[0].pathOnHost",
            ),
        ] {
            let err = policy.check_config(Caller::Member, &config).unwrap_err();
            assert_eq!(err.code(), "PERMISSION_DENIED");
            assert!(matches!(&err, SmartVmError::PermissionDenied { field: f, .. } if f == field), "{err}");
            policy.check_config(Caller::Owner, &config).unwrap();
        }
        let mut logged = ok.clone();
        logged.logger = Some(crate::config::LoggerConfig::new("/etc/atkpwn", crate::config::LogLevel::Info));
        assert!(policy.check_config(Caller::Member, &logged).is_err());
        logged.logger = Some(crate::config::LoggerConfig::new(allowed.join("fc.log"), crate::config::LogLevel::Info));
        policy.check_config(Caller::Member, &logged).unwrap();
        logged.logger = Some(crate::config::LoggerConfig::new(allowed.join("vmlinux"), crate::config::LogLevel::Info));
        let err = policy.check_config(Caller::Member, &logged).unwrap_err();
        assert!(err.to_string().contains("must be a new file"), "an existing file is not overwritten: {err}");
        // A directory others may write, inside the allowed one, is refused.
        let open = allowed.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        std::fs::write(open.join("vmlinux"), b"k").unwrap();
        let err = policy.check_config(Caller::Member, &VmConfig::new(open.join("vmlinux"))).unwrap_err();
        assert!(err.to_string().contains("others may write"), "{err}");
        let nothing_allowed = AgentPolicy::default();
        assert!(nothing_allowed.check_config(Caller::Member, &ok).is_err());
    }
}
