//! One task as the shim holds it: what runs it (a VM, or nothing for a CRI pod sandbox), the
//! paths containerd gave, and how it ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use containerd_shim_protos::api;
use containerd_shim_protos::types::task::Status;
use smartvm::guest::protocol::ExecRequest;
use smartvm::lifecycle::ExitInfo;
use smartvm::{MicroVm, VmState};
use tokio::sync::watch;

use crate::process::{GuestProcess, ProcessIo};
use crate::spec::Init;

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

/// A process's end, recorded once and awaitable.
#[derive(Debug)]
pub struct EndRecord(watch::Sender<Option<Ended>>);

impl Default for EndRecord {
    fn default() -> EndRecord {
        EndRecord(watch::Sender::new(None))
    }
}

impl EndRecord {
    /// The end, once known.
    pub fn get(&self) -> Option<Ended> {
        *self.0.borrow()
    }

    /// Records the end with `status` (the first record wins) and returns the record.
    pub fn set(&self, status: u32) -> Ended {
        let ended = Ended { status, at: SystemTime::now() };
        self.0.send_if_modified(|slot| slot.is_none().then(|| *slot = Some(ended)).is_some());
        self.get().unwrap_or(ended)
    }

    /// Waits for the end.
    pub async fn wait(&self) -> Ended {
        let mut ended = self.0.subscribe();
        let end = ended.wait_for(Option::is_some).await.map(|e| *e);
        // The sender lives as long as `self`, so the wait ends with a record.
        end.ok().flatten().unwrap_or(Ended { status: 255, at: SystemTime::now() })
    }
}

/// One task.
pub struct TaskEntry {
    /// containerd's id.
    pub id: String,
    /// The bundle dir.
    pub bundle: String,
    /// The FIFOs containerd gave.
    pub io: ProcessIo,
    /// The snapshot's mounts, whose image is dropped with the task.
    pub rootfs: Vec<api::Mount>,
    /// What runs it.
    pub workload: Workload,
    /// What its guest runs first.
    pub init: Init,
    /// The process the agent runs as the task's own (agent mode, once started).
    pub init_process: OnceLock<Arc<GuestProcess>>,
    /// Exec'd processes by exec id.
    pub execs: Mutex<HashMap<String, Arc<ExecEntry>>>,
    /// The pid containerd sees (Firecracker's; the shim's own for a sandbox).
    pub pid: AtomicU32,
    /// Whether `Start` ran.
    pub started: AtomicBool,
    /// The signal a `Kill` sent (0: none), for the exit status of a stopped task.
    pub killed_by: AtomicI32,
    /// Its end, once known.
    pub ended: EndRecord,
}

/// A process exec'd in a task's guest.
pub struct ExecEntry {
    /// containerd's exec id.
    pub id: String,
    /// What to run.
    pub request: ExecRequest,
    /// The FIFOs containerd gave.
    pub io: ProcessIo,
    /// The process, once started.
    pub process: OnceLock<Arc<GuestProcess>>,
    /// Its end, once known.
    pub ended: EndRecord,
}

impl ExecEntry {
    /// containerd's view of its state.
    pub fn status(&self) -> Status {
        match (self.ended.get(), self.process.get()) {
            (Some(_), _) => Status::STOPPED,
            (None, Some(_)) => Status::RUNNING,
            (None, None) => Status::CREATED,
        }
    }

    /// Its pid in the guest (0 before it starts).
    pub fn pid(&self) -> u32 {
        self.process.get().map_or(0, |p| p.pid())
    }
}

impl TaskEntry {
    /// A task not started yet.
    pub fn new(req: &api::CreateTaskRequest, workload: Workload, init: Init) -> TaskEntry {
        TaskEntry {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            io: ProcessIo { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone() },
            rootfs: req.rootfs.clone(),
            workload,
            init,
            init_process: OnceLock::new(),
            execs: Mutex::default(),
            pid: AtomicU32::new(0),
            started: AtomicBool::new(false),
            killed_by: AtomicI32::new(0),
            ended: EndRecord::default(),
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
        self.ended.get()
    }

    /// Records its end with `status` (the first record wins).
    pub fn end(&self, status: u32) -> Ended {
        self.ended.set(status)
    }

    /// The exec `id`.
    pub fn exec(&self, id: &str) -> Option<Arc<ExecEntry>> {
        self.execs.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
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
