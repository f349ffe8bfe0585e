//! [`Resource`]: one thing a VM acquired on the host, and how each kind is released. The
//! [`unwind`] releases a list in reverse order with one policy for stop, failure, crash recovery
//! and `smartvm gc` (see the [ledger](super::ledger) for where the list comes from).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::ProcessRecord;
use super::unwind_error::UnwindError;
use crate::trust::confine::{remove_beneath, ConfineError, Removal};

/// Root of the cgroup hierarchy: the only place cgroup dirs are removed from.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One thing a VM acquired on the host, in acquisition order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Resource {
    /// The VM's runtime dir (holds the journal; always the first entry, removed last).
    RuntimeDir {
        /// `<runtime_dir>/<sanitized id>`.
        path: PathBuf,
    },
    /// The jail (chroot) dir of a jailed VM.
    JailDir {
        /// `<chroot base>/<exec name>/<instance id>`.
        path: PathBuf,
    },
    /// A private copy of a drive.
    StagedDrive(crate::staging::StagedDrive),
    /// A TAP device.
    Tap {
        /// Interface name (`sv…`).
        name: String,
    },
    /// A Unix socket Firecracker creates outside the runtime dir (vsock).
    Socket {
        /// Its path.
        path: PathBuf,
    },
    /// A file a jailed Firecracker makes in its chroot (log, metrics, vsock socket), shown by a
    /// symlink at the path the config names; on unwind a kept file replaces the link with its
    /// contents, otherwise the link goes.
    Exported {
        /// The configured path (the symlink).
        link: PathBuf,
        /// The file inside the jail.
        target: PathBuf,
        /// Keep the contents at `link` (log, metrics) rather than just removing the link.
        keep: bool,
    },
    /// A cgroup dir the jailer creates.
    Cgroup {
        /// Its path under `/sys/fs/cgroup`.
        path: PathBuf,
    },
    /// The Firecracker (or jailer) process; journaled before spawn, completed with pid and
    /// start time right after.
    Process(ProcessRecord),
}

/// Where an unwind may act.
#[derive(Debug, Clone)]
pub struct UnwindScope {
    /// Parent of all VM runtime dirs.
    pub runtime_dir: PathBuf,
    /// Base of the jails.
    pub jail_base: PathBuf,
    /// The unwinding process owns the VM (it spawned the process itself): the process is
    /// identified by pid and start time, and sockets it created outside the runtime dir may go.
    pub owner: bool,
}

/// One resource the unwind could not remove.
#[derive(Debug, thiserror::Error)]
#[error("could not release {resource:?}")]
pub struct UnwindFailure {
    /// The resource.
    pub resource: Resource,
    /// Why.
    #[source]
    pub error: UnwindError,
}

/// Releases `resources` in reverse order with one policy: best effort, every failure reported,
/// nothing skipped, and idempotent (what is already gone counts as released). The runtime dir
/// (and with it the journal) is kept when something before it could not be released, so that
/// a later reclaim can try again.
pub fn unwind(resources: &[Resource], scope: &UnwindScope) -> Vec<UnwindFailure> {
    let mut failures = Vec::new();
    for resource in resources.iter().rev() {
        if matches!(resource, Resource::RuntimeDir { .. }) && !failures.is_empty() {
            continue;
        }
        if let Err(error) = release(resource, scope) {
            failures.push(UnwindFailure { resource: resource.clone(), error });
        }
    }
    failures
}

fn release(resource: &Resource, scope: &UnwindScope) -> Result<(), UnwindError> {
    match resource {
        Resource::Process(p) => p.kill(scope.owner),
        Resource::Tap { name } => release_tap(name),
        Resource::Cgroup { path } => {
            remove_beneath(Path::new(CGROUP_ROOT), path, Removal::EmptyDir).map(drop).map_err(Into::into)
        }
        Resource::JailDir { path } => {
            remove_beneath(&scope.jail_base, path, Removal::Tree).map(drop).map_err(Into::into)
        }
        Resource::StagedDrive(s) => {
            let root = if s.staged.starts_with(&scope.jail_base) { &scope.jail_base } else { &scope.runtime_dir };
            remove_beneath(root, &s.staged, Removal::Tree).map(drop).map_err(Into::into)
        }
        Resource::Socket { path } => release_socket(path, scope),
        Resource::Exported { link, target, keep } => super::export::release(link, target, *keep, &scope.jail_base),
        Resource::RuntimeDir { path } => {
            if path.parent() != Some(scope.runtime_dir.as_path()) {
                return Err(ConfineError::Outside { path: path.clone(), root: scope.runtime_dir.clone() }.into());
            }
            remove_beneath(&scope.runtime_dir, path, Removal::Tree).map(drop).map_err(Into::into)
        }
    }
}

/// True for names smartvm gives its TAPs (`sv` + 10 hex digits); an unwind removes no other.
pub fn is_smartvm_tap_name(name: &str) -> bool {
    name.len() == 12 && name.starts_with("sv") && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn release_tap(name: &str) -> Result<(), UnwindError> {
    if !is_smartvm_tap_name(name) {
        return Err(UnwindError::NotOurs("not a smartvm TAP name"));
    }
    delete_tap(name)
}

#[cfg(not(feature = "network"))]
fn delete_tap(_name: &str) -> Result<(), UnwindError> {
    Err(UnwindError::NotOurs("TAPs are removed by builds with the network feature"))
}

#[cfg(feature = "network")]
fn delete_tap(name: &str) -> Result<(), UnwindError> {
    match super::tap_removal::remove_tap(name) {
        Ok(_) => Ok(()),
        Err(super::tap_removal::TapRemovalError::NotATap(_)) => Err(UnwindError::NotOurs("the link is not a TAP")),
        Err(e) => Err(UnwindError::Tap(e)),
    }
}

fn release_socket(path: &Path, scope: &UnwindScope) -> Result<(), UnwindError> {
    if !scope.owner && crate::trust::confine::relative_beneath(&scope.runtime_dir, path).is_none() {
        return Err(UnwindError::NotOurs("a socket outside the runtime dir is removed only by its owner"));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => Ok(std::fs::remove_file(path)?),
        Ok(_) => Err(UnwindError::NotOurs("not a socket")),
    }
}
