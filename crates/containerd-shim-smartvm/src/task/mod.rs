//! The Task service: each task is one smartvm microVM, created from the bundle, started on
//! `Start`, its console relayed to the task's stdout, its end reported as the task's exit. A CRI
//! pod sandbox is held by the shim without a VM; its containers share the pod's shim process.

mod agent;
mod console;
mod entry;
mod exec;
mod guard;
mod start;
mod stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::TtrpcResult;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskPaused, TaskResumed, TaskStart};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, Code};
use smartvm::{SmartVm, SmartVmOptions, VmState};

use crate::spec::{self, Init, TaskKind};
use entry::{TaskEntry, Workload};
pub use guard::vm_id;

/// The shim's Task service.
#[derive(Clone)]
pub struct TaskService {
    namespace: String,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    smartvm: Arc<SmartVm>,
    tasks: Arc<Mutex<HashMap<String, Arc<TaskEntry>>>>,
}

fn status(code: Code, message: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn internal(e: impl std::fmt::Display) -> ttrpc::Error {
    status(Code::INTERNAL, format!("smartvm: {e}"))
}

/// An error with its causes, for containerd's (and ctr's) output.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32, ..Default::default() }
}

/// After the shim died: reclaims every VM whose owner is gone (this task's among them).
pub async fn reclaim(_namespace: &str, _id: &str) {
    let smartvm = SmartVm::new(SmartVmOptions::from_env());
    if let Err(e) = smartvm.reclaim().await {
        log::warn!("reclaiming what the shim left: {e}");
    }
}

impl TaskService {
    /// The service of one shim process.
    pub fn new(namespace: String, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> TaskService {
        TaskService {
            namespace,
            publisher: Arc::new(publisher),
            exit,
            smartvm: Arc::new(SmartVm::new(SmartVmOptions::from_env())),
            tasks: Arc::default(),
        }
    }

    /// Where root filesystem images are kept.
    fn rootfs_cache(&self) -> PathBuf {
        self.smartvm.options().data_dir.join("shim-rootfs")
    }

    fn task(&self, id: &str) -> TtrpcResult<Arc<TaskEntry>> {
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.get(id).cloned().ok_or_else(|| status(Code::NOT_FOUND, format!("no task {id}")))
    }

    /// The running process of a task (its own, in agent mode) or of one of its execs.
    fn process_of(&self, id: &str, exec_id: &str) -> TtrpcResult<Arc<crate::process::GuestProcess>> {
        let process = if exec_id.is_empty() {
            self.task(id)?.init_process.get().cloned()
        } else {
            self.exec_of(id, exec_id)?.1.process.get().cloned()
        };
        process.ok_or_else(|| status(Code::FAILED_PRECONDITION, "no process of the guest agent runs there"))
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = ttrpc::context::Context::default();
        if let Err(e) = self.publisher.publish(ctx, topic, &self.namespace, event).await {
            log::warn!("publishing {topic}: {e}");
        }
    }

    /// What a bundle asks for, with the runtime's defaults from containerd's runtime options;
    /// an unusable bundle or options file is `INVALID_ARGUMENT` with the reason.
    fn task_kind(req: &api::CreateTaskRequest) -> TtrpcResult<TaskKind> {
        let bundle = Path::new(&req.bundle);
        let invalid = |e: &dyn std::error::Error| status(Code::INVALID_ARGUMENT, format!("smartvm: {}", chain(e)));
        let defaults = match crate::options::config_path(req.options.as_ref()).map_err(|e| invalid(&e))? {
            Some(path) => crate::options::load(&path).map_err(|e| invalid(&e))?.annotations(),
            None => Default::default(),
        };
        let config = std::fs::read_to_string(bundle.join("config.json"))
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("{}/config.json: {e}", bundle.display())))?;
        spec::task_kind_with(&config, &defaults).map_err(|e| invalid(&e))
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        let (workload, init) = match Self::task_kind(&req)? {
            TaskKind::Sandbox => (Workload::Sandbox, Init::Console),
            TaskKind::Vm(plan) => (self.create_vm(&req, &plan).await?, plan.init),
        };
        let task = Arc::new(TaskEntry::new(&req, workload, init));
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).insert(req.id.clone(), task);
        let event = TaskCreate { container_id: req.id, bundle: req.bundle, ..Default::default() };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::CreateTaskResponse { pid: 0, ..Default::default() })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        if !req.exec_id.is_empty() {
            let (task, exec) = self.exec_of(&req.id, &req.exec_id)?;
            let pid = self.start_exec(&task, exec).await?;
            return Ok(api::StartResponse { pid, ..Default::default() });
        }
        let task = self.task(&req.id)?;
        if task.started.swap(true, Ordering::SeqCst) {
            return Err(status(Code::FAILED_PRECONDITION, format!("task {} was started", req.id)));
        }
        let pid = match task.vm() {
            Some(vm) => match self.start_vm(&task, vm).await {
                Ok(pid) => pid,
                Err(e) => {
                    task.started.store(false, Ordering::SeqCst);
                    return Err(e);
                }
            },
            None => std::process::id(),
        };
        task.pid.store(pid, Ordering::SeqCst);
        let event = TaskStart { container_id: req.id, pid, ..Default::default() };
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        if !req.exec_id.is_empty() {
            let (task, exec) = self.exec_of(&req.id, &req.exec_id)?;
            let ended = exec.ended.get();
            return Ok(api::StateResponse {
                id: task.id.clone(),
                exec_id: exec.id.clone(),
                bundle: task.bundle.clone(),
                pid: exec.pid(),
                status: exec.status().into(),
                stdin: exec.io.stdin.clone(),
                stdout: exec.io.stdout.clone(),
                stderr: exec.io.stderr.clone(),
                terminal: exec.request.tty.is_some(),
                exit_status: ended.map_or(0, |e| e.status),
                exited_at: ended.map(|e| timestamp(e.at)).into(),
                ..Default::default()
            });
        }
        let task = self.task(&req.id)?;
        let ended = task.ended();
        Ok(api::StateResponse {
            id: task.id.clone(),
            bundle: task.bundle.clone(),
            pid: task.pid.load(Ordering::SeqCst),
            status: task.status().into(),
            stdin: task.io.stdin.clone(),
            stdout: task.io.stdout.clone(),
            stderr: task.io.stderr.clone(),
            terminal: matches!(&task.init, Init::Agent(r) if r.tty.is_some()),
            exit_status: ended.map_or(0, |e| e.status),
            exited_at: ended.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let end = if req.exec_id.is_empty() {
            self.task(&req.id)?.ended.wait().await
        } else {
            self.exec_of(&req.id, &req.exec_id)?.1.ended.wait().await
        };
        Ok(api::WaitResponse {
            exit_status: end.status,
            exited_at: Some(timestamp(end.at)).into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        if !req.exec_id.is_empty() {
            let (_, exec) = self.exec_of(&req.id, &req.exec_id)?;
            self.kill_exec(&exec, req.signal)?;
            return Ok(api::Empty::default());
        }
        let task = self.task(&req.id)?;
        if req.signal == 0 || task.ended().is_some() {
            return Ok(api::Empty::default());
        }
        match task.vm() {
            Some(vm) if vm.state() != VmState::Created => self.kill_vm(&task, vm, req.signal).await?,
            // A sandbox, or a VM never started: nothing runs, so it ends here.
            _ => {
                task.killed_by.store(req.signal as i32, Ordering::SeqCst);
                let ended = task.end(128 + req.signal);
                if task.started.load(Ordering::SeqCst) {
                    self.publish_exit(&task, ended).await;
                }
            }
        }
        Ok(api::Empty::default())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let (task, exec) = self.exec_of(&req.id, &req.exec_id)?;
            return self.delete_exec(&task, &exec);
        }
        let task = self.task(&req.id)?;
        if let Some(vm) = task.vm() {
            self.smartvm.remove_vm(vm.id()).await.map_err(internal)?;
        }
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(&req.id);
        crate::rootfs::forget(&task.rootfs, &self.rootfs_cache());
        let ended = task.ended().unwrap_or(entry::Ended { status: 137, at: SystemTime::now() });
        let pid = task.pid.load(Ordering::SeqCst);
        let event = TaskDelete {
            container_id: task.id.clone(),
            pid,
            exit_status: ended.status,
            exited_at: Some(timestamp(ended.at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::DeleteResponse {
            pid,
            exit_status: ended.status,
            exited_at: Some(timestamp(ended.at)).into(),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let task = self.task(&req.id)?;
        let pid = task.pid.load(Ordering::SeqCst);
        let processes = (pid != 0).then(|| api::ProcessInfo { pid, ..Default::default() });
        Ok(api::PidsResponse { processes: processes.into_iter().collect(), ..Default::default() })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        if let Some(vm) = self.task(&req.id)?.vm() {
            vm.pause().await.map_err(internal)?;
        }
        let event = TaskPaused { container_id: req.id, ..Default::default() };
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::Empty::default())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        if let Some(vm) = self.task(&req.id)?.vm() {
            vm.resume().await.map_err(internal)?;
        }
        let event = TaskResumed { container_id: req.id, ..Default::default() };
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::Empty::default())
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.task(&req.id).map(|t| t.pid.load(Ordering::SeqCst)).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.tasks.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        self.add_exec(req).await?;
        Ok(api::Empty::default())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        let process = self.process_of(&req.id, &req.exec_id)?;
        let size = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        process.resize(size(req.height), size(req.width)).map_err(|e| internal(chain(&e)))?;
        Ok(api::Empty::default())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        // A console-mode task reads no stdin: nothing to close.
        if let Ok(process) = self.process_of(&req.id, &req.exec_id) {
            process.close_stdin();
        }
        Ok(api::Empty::default())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let task = self.task(&req.id)?;
        let Some(vm) = task.vm() else {
            return Err(status(Code::FAILED_PRECONDITION, "a pod sandbox has no VM to measure"));
        };
        let pid = task.pid.load(Ordering::SeqCst);
        let usage = (pid != 0).then(|| stats::read(pid)).flatten();
        let usage =
            usage.ok_or_else(|| status(Code::FAILED_PRECONDITION, format!("task {} is not running", req.id)))?;
        let limit = vm.config().machine_config.mem_size_mib << 20;
        Ok(api::StatsResponse { stats: Some(stats::metrics(usage, limit)).into(), ..Default::default() })
    }
}
