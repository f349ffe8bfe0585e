//! [`VmRuntimeOptions`]: how one VM runs on this host (binary, dirs, timeouts, executor, API).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::FetchBinary;
use crate::process::{Seccomp, StopPlan};
use crate::version::FirecrackerVersion;

/// How VMs behave wherever that is chosen the same way for one VM ([`VmRuntimeOptions`]) and
/// for every VM an orchestrator creates ([`SmartVmOptions::vm_policy`](crate::SmartVmOptions)):
/// one struct, handed down as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPolicy {
    /// Stage writable drives (default true).
    pub ephemeral_writable_drives: bool,
    /// How long to wait for the API socket (default 5 s).
    pub socket_timeout: Duration,
    /// Configure the VM with API requests before `InstanceStart` even when the version is
    /// known (by default such VMs boot from one `--config-file`: see [`BootPath`](super::BootPath);
    /// slower: for comparisons and debugging, `SMARTVM_BOOT_VIA_API=1`).
    pub boot_via_api: bool,
    /// The VM outlives this program (a host agent's VMs): Firecracker gets no parent-death
    /// signal and a session of its own, its console and log go to `console.log` and
    /// `firecracker.log` in the VM's runtime dir (the [`Console`](crate::process::Console)
    /// follows them), dropping the `MicroVm` leaves a running VM alone, and `smartvm gc` spares
    /// it while its process runs.
    pub detached: bool,
}

impl Default for VmPolicy {
    fn default() -> Self {
        Self {
            ephemeral_writable_drives: true,
            socket_timeout: Duration::from_secs(5),
            boot_via_api: false,
            detached: false,
        }
    }
}

/// How a VM runs on this host (set by [`SmartVm`](crate::SmartVm), or directly).
#[derive(Debug, Clone)]
pub struct VmRuntimeOptions {
    /// The Firecracker binary.
    pub firecracker_binary: PathBuf,
    /// Parent of the per-VM runtime dirs (the VM's is `<runtime_dir>/<sanitized id>/`).
    pub runtime_dir: PathBuf,
    /// Staging, timeouts, boot path, detachment (see [`VmPolicy`]).
    pub policy: VmPolicy,
    /// Per-request API timeout.
    pub request_timeout: Duration,
    /// How `stop()` ends the process.
    pub stop_plan: StopPlan,
    /// Seccomp mode.
    pub seccomp: Seccomp,
    /// Also write the serial console to this file.
    pub console_file: Option<PathBuf>,
    /// Lines of console kept in memory.
    pub console_lines: usize,
    /// Run Firecracker in a private mount namespace that shows the VM's staged drives at one
    /// fixed path, so snapshots with ephemeral drives restore into other VMs (default: when
    /// this process may create mount namespaces, see
    /// [`private_mounts_available`](crate::process::private_mounts_available)).
    pub drive_namespace: bool,
    /// Run Firecracker under its jailer (chroot, uid/gid, cgroups, netns) instead of directly.
    pub jailer: Option<crate::process::JailerConfig>,
    /// Creates TAPs for interfaces without `hostDevName` (required when a config has such).
    #[cfg(feature = "network")]
    pub network: Option<Arc<crate::network::NetworkManager>>,
    /// Append the guest `ip=` argument of the first created TAP to the kernel command line.
    pub append_network_boot_args: bool,
    /// The binary's version when already known (saves a `GET /version` per VM); payloads are
    /// generated for it.
    pub firecracker_version: Option<FirecrackerVersion>,
    /// The level of Firecracker's own log (on its stderr, [`MicroVm::stderr`](super::MicroVm::stderr)) when the config
    /// has no logger (default: Warning, Info for a config-file boot, which reports its outcome
    /// there; a level quieter than Info selects the API boot path).
    pub firecracker_log_level: Option<crate::config::LogLevel>,
    /// Firecracker serves its API on a socket after boot (the default). Off, it runs with
    /// `--no-api`, for VMs that only run to completion: Firecracker starts no API thread and has
    /// none to stop at exit (what that is worth: BENCHMARKS.md), and everything that needs
    /// the API (pause, resume, snapshots, metadata and hot updates, metrics, Ctrl-Alt-Del) answers
    /// `NO_CLIENT`; [`stop`](super::MicroVm::stop) goes straight to SIGTERM. Needs a config-file boot
    /// (the Firecracker version known, its log read by smartvm, not jailed); restores and
    /// detached VMs need the API.
    pub api: bool,
    /// Obtains [`firecracker_binary`](Self::firecracker_binary) at start when it does not
    /// exist yet (the orchestrator's `auto_download_binary`); `None`: a missing binary is
    /// `BINARY_NOT_FOUND`.
    pub fetch_binary: Option<Arc<dyn FetchBinary>>,
}

impl VmRuntimeOptions {
    /// Defaults for `binary` with per-VM dirs under `runtime_dir`.
    pub fn new(binary: impl Into<PathBuf>, runtime_dir: impl Into<PathBuf>) -> Self {
        Self {
            firecracker_binary: binary.into(),
            runtime_dir: runtime_dir.into(),
            policy: VmPolicy::default(),
            request_timeout: crate::api::DEFAULT_REQUEST_TIMEOUT,
            stop_plan: StopPlan::default(),
            seccomp: Seccomp::Default,
            console_file: None,
            console_lines: crate::process::DEFAULT_CONSOLE_LINES,
            firecracker_version: None,
            firecracker_log_level: None,
            api: true,
            fetch_binary: None,
            #[cfg(feature = "network")]
            network: None,
            jailer: None,
            append_network_boot_args: false,
            drive_namespace: crate::process::private_mounts_available(),
        }
    }
}
