//! The lifecycle vocabulary shared by every layer: a VM's [`VmState`], the [`Step`]s of its
//! start and how its process ended ([`ExitInfo`]). Plain data with no dependencies, so errors, the agent's wire types and the VM layer
//! all name them without importing each other.

use std::fmt;

/// Lifecycle state of a [`MicroVm`](crate::MicroVm).
///
/// `Created → Configuring → Running ⇄ Paused → Stopped`, and `Error` after a failed start or
/// when the Firecracker process died on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmState {
    /// Registered, nothing spawned yet.
    Created,
    /// Firecracker is running and receiving its pre-boot configuration.
    Configuring,
    /// The guest runs.
    Running,
    /// The guest's vCPUs are paused.
    Paused,
    /// The process has ended (stopped by smartvm or the guest shut down cleanly).
    Stopped,
    /// Start failed, or the process died with an error.
    Error,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Created => "created",
            VmState::Configuring => "configuring",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
        })
    }
}

/// One step of starting or restoring a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The binaries (fetched first where the orchestrator downloads them) and the runtime dir
    /// can be trusted (nothing is created but the runtime dir).
    CheckHost,
    /// The VM's runtime dir, created together with its journal.
    CreateRuntimeDir,
    /// Restore only: merge a Diff snapshot's memory onto its base.
    MaterializeMemory,
    /// What the [executor](crate::executor) needs before spawn (a jail: chroot, kernel, initrd).
    Prepare,
    /// Private copies of drives (a snapshot's saved copies on restore).
    StageDrives,
    /// TAPs for interfaces that name no host device.
    CreateTaps,
    /// Spawn Firecracker (directly or under the jailer).
    Spawn,
    /// Wait until the API socket answers.
    WaitForApi,
    /// The Firecracker version payloads are generated for.
    LearnVersion,
    /// Log and metrics files that old Firecrackers require to exist.
    PrepareOutputFiles,
    /// Config-file boot: the pre-boot plan written as Firecracker's `--config-file`.
    WriteConfigFile,
    /// Config-file boot: Firecracker answers once the VM it built from the file runs.
    ConfirmBoot,
    /// The pre-boot requests ([`boot_plan`](crate::vm::plan::boot_plan)).
    Configure,
    /// `InstanceStart`.
    InstanceStart,
    /// Restore only: logger/metrics, then `PUT /snapshot/load`.
    LoadSnapshot,
}

impl Step {
    /// The step's name in errors, logs and JSON (`wait_for_api`).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::CheckHost => "check_host",
            Step::CreateRuntimeDir => "create_runtime_dir",
            Step::MaterializeMemory => "materialize_memory",
            Step::Prepare => "prepare",
            Step::StageDrives => "stage_drives",
            Step::CreateTaps => "create_taps",
            Step::Spawn => "spawn",
            Step::WaitForApi => "wait_for_api",
            Step::LearnVersion => "learn_version",
            Step::PrepareOutputFiles => "prepare_output_files",
            Step::WriteConfigFile => "write_config_file",
            Step::ConfirmBoot => "confirm_boot",
            Step::Configure => "configure",
            Step::InstanceStart => "instance_start",
            Step::LoadSnapshot => "load_snapshot",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "signal {s}"),
            _ => f.write_str("unknown status"),
        }
    }
}
