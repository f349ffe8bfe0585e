//! The lifecycle vocabulary shared by every layer: a VM's [`VmState`], the [`Step`]s of its
//! start and how its process ended ([`ExitInfo`]). Plain data with no dependencies, so errors,
//! the agent's wire types and the VM layer all name them without importing each other. In JSON
//! each is written as its `Display` form (`running`, `wait_for_api`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Lifecycle state of a [`MicroVm`](crate::MicroVm).
///
/// `Created → Configuring → Running ⇄ Paused → Stopped`, and `Error` after a failed start or
/// when the Firecracker process died on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl VmState {
    /// Every state, in lifecycle order.
    pub const ALL: [VmState; 6] =
        [VmState::Created, VmState::Configuring, VmState::Running, VmState::Paused, VmState::Stopped, VmState::Error];
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// Every step, in declaration order (the order of a start and a restore is
    /// [`start_steps`](crate::vm::start_steps)'s and [`restore_steps`](crate::vm::restore_steps)').
    pub const ALL: [Step; 15] = [
        Step::CheckHost,
        Step::CreateRuntimeDir,
        Step::MaterializeMemory,
        Step::Prepare,
        Step::StageDrives,
        Step::CreateTaps,
        Step::Spawn,
        Step::WaitForApi,
        Step::LearnVersion,
        Step::PrepareOutputFiles,
        Step::WriteConfigFile,
        Step::ConfirmBoot,
        Step::Configure,
        Step::InstanceStart,
        Step::LoadSnapshot,
    ];

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, when it exited normally.
    #[serde(default)]
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    #[serde(default)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_are_the_display_names() {
        for state in [
            VmState::Created,
            VmState::Configuring,
            VmState::Running,
            VmState::Paused,
            VmState::Stopped,
            VmState::Error,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.to_string());
            assert_eq!(serde_json::from_value::<VmState>(state.to_string().into()).unwrap(), state);
        }
        for step in
            [Step::CheckHost, Step::WaitForApi, Step::MaterializeMemory, Step::LoadSnapshot, Step::InstanceStart]
        {
            assert_eq!(serde_json::to_value(step).unwrap(), step.as_str());
        }
    }
}
