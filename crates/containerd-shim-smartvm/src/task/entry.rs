//! One task as the shim holds it: what runs it (a VM, or nothing for a CRI pod sandbox), the
//! paths containerd gave, and how it ended.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim_protos::api;
use containerd_shim_protos::types::task::Status;
use smartvm::lifecycle::ExitInfo;
use smartvm::{MicroVm, VmState};
use tokio::sync::watch;

/// How a task ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// Its exit status as containerd reports it.
    pub status: u32,
    /// When.
    pub at: SystemTime,
}

/// What runs a task.
pub enum Workload {
    /// A microVM.
    Vm(Arc<MicroVm>),
    /// A CRI pod sandbox: the shim itself holds it (see `spec::TaskKind::Sandbox`).
    Sandbox,
}

/// One task.
pub struct TaskEntry {
    /// containerd's id.
    pub id: String,
    /// The bundle dir.
    pub bundle: String,
    /// The stdout FIFO (empty: none).
    pub stdout: String,
    /// The snapshot's mounts, whose image is dropped with the task.
    pub rootfs: Vec<api::Mount>,
    /// What runs it.
    pub workload: Workload,
    /// The pid containerd sees (Firecracker's; the shim's own for a sandbox).
    pub pid: AtomicU32,
    /// Whether `Start` ran.
    pub started: AtomicBool,
    /// The signal a `Kill` sent (0: none), for the exit status of a stopped task.
    pub killed_by: AtomicI32,
    /// Its end, once known.
    pub ended: watch::Sender<Option<Ended>>,
}

impl TaskEntry {
    /// A task not started yet.
    pub fn new(req: &api::CreateTaskRequest, workload: Workload) -> TaskEntry {
        TaskEntry {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            stdout: req.stdout.clone(),
            rootfs: req.rootfs.clone(),
            workload,
            pid: AtomicU32::new(0),
            started: AtomicBool::new(false),
            killed_by: AtomicI32::new(0),
            ended: watch::Sender::new(None),
        }
    }

    /// Its VM, unless it is a sandbox.
    pub fn vm(&self) -> Option<&Arc<MicroVm>> {
        match &self.workload {
            Workload::Vm(vm) => Some(vm),
            Workload::Sandbox => None,
        }
    }

    /// Its end, once known.
    pub fn ended(&self) -> Option<Ended> {
        *self.ended.borrow()
    }

    /// Records its end with `status` (the first record wins).
    pub fn end(&self, status: u32) -> Ended {
        let ended = Ended { status, at: SystemTime::now() };
        self.ended.send_if_modified(|slot| slot.is_none().then(|| *slot = Some(ended)).is_some());
        self.ended().unwrap_or(ended)
    }

    /// containerd's view of its state.
    pub fn status(&self) -> Status {
        if self.ended().is_some() {
            return Status::STOPPED;
        }
        match &self.workload {
            Workload::Sandbox if self.started.load(Ordering::SeqCst) => Status::RUNNING,
            Workload::Sandbox => Status::CREATED,
            Workload::Vm(vm) => match vm.state() {
                VmState::Created | VmState::Configuring => Status::CREATED,
                VmState::Paused => Status::PAUSED,
                VmState::Running => Status::RUNNING,
                _ => Status::STOPPED,
            },
        }
    }
}

/// A VM task's exit status (pure): what the guest reported, else 128 + the signal a `Kill`
/// sent, else how Firecracker ended.
pub fn exit_status(reported: Option<u8>, killed_by: i32, exited: Option<ExitInfo>) -> u32 {
    match (reported, exited) {
        (Some(code), _) => u32::from(code),
        _ if killed_by > 0 => 128 + killed_by as u32,
        (None, Some(info)) => info.code.map_or(128 + info.signal.unwrap_or(9) as u32, |c| c as u32),
        (None, None) => 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guests_report_wins_then_the_kill_then_the_process() {
        let killed = Some(ExitInfo { code: None, signal: Some(9) });
        assert_eq!(exit_status(Some(3), 15, killed), 3);
        assert_eq!(exit_status(None, 15, killed), 143);
        assert_eq!(exit_status(None, 0, killed), 137);
        assert_eq!(exit_status(None, 0, Some(ExitInfo { code: Some(0), signal: None })), 0);
        assert_eq!(exit_status(None, 0, None), 255);
    }
}
