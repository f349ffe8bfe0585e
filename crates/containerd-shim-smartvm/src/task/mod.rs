//! The Task service: each task is one smartvm microVM, created from the bundle, started on
//! `Start`, its console relayed to the task's stdout, its end reported as the task's exit. A CRI
//! pod sandbox is held by the shim without a VM; its containers share the pod's shim process.

mod console;
mod entry;
mod guard;

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
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskPaused, TaskResumed, TaskStart};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, Code};
use smartvm::{SmartVm, SmartVmOptions, VmConfig, VmState};

use crate::spec::{self, Guest, TaskKind, TaskPlan};
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

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = ttrpc::context::Context::default();
        if let Err(e) = self.publisher.publish(ctx, topic, &self.namespace, event).await {
            log::warn!("publishing {topic}: {e}");
        }
    }

    /// What a bundle asks for; an unusable bundle is `INVALID_ARGUMENT` with the reason.
    fn task_kind(bundle: &Path) -> TtrpcResult<TaskKind> {
        let config = std::fs::read_to_string(bundle.join("config.json"))
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("{}/config.json: {e}", bundle.display())))?;
        spec::task_kind(&config).map_err(|e| status(Code::INVALID_ARGUMENT, format!("smartvm: {e}")))
    }

    /// The VM config of a plan.
    fn vm_config(&self, id: &str, plan: TaskPlan) -> TtrpcResult<VmConfig> {
        let kernel = match plan.guest {
            Guest::Probe => smartvm::probe::install_probe_kernel(&self.smartvm.options().data_dir.join("kernels"))
                .map_err(internal)?,
            Guest::Kernel(path) => guard::allowed_kernel(&path, &self.smartvm.options().data_dir)?,
        };
        Ok(VmConfig::new(kernel)
            .with_id(vm_id(&self.namespace, id))
            .with_machine(u32::from(plan.vcpus), u64::from(plan.mem_mib))
            .with_boot_args(plan.boot_args))
    }

    /// The VM of a workload task, its root drive made from the snapshot's mounts.
    async fn create_vm(&self, req: &api::CreateTaskRequest, plan: TaskPlan) -> TtrpcResult<Workload> {
        let mut cfg = self.vm_config(&req.id, plan)?;
        let image = crate::rootfs::ensure(&req.rootfs, Path::new(&req.bundle), &self.rootfs_cache())
            .await
            .map_err(|e| internal(chain(&e)))?;
        if let Some(image) = image {
            cfg = cfg.with_drive(smartvm::config::DriveConfig::new("rootfs", image).root());
        }
        let vm = self.smartvm.create_vm(&cfg).map_err(|e| status(Code::INVALID_ARGUMENT, format!("smartvm: {e}")))?;
        Ok(Workload::Vm(vm))
    }

    /// Relays a VM's console to stdout, then records and publishes the end.
    fn watch_end(&self, task: Arc<TaskEntry>) {
        let service = self.clone();
        tokio::spawn(async move {
            let Some(vm) = task.vm().cloned() else { return };
            console::relay(&task).await;
            let exited = vm.exited().await;
            let lines = vm.console().lines();
            let reported = smartvm::guest::protocol::reported_exit(lines.iter().map(String::as_str));
            let ended = task.end(entry::exit_status(reported, task.killed_by.load(Ordering::SeqCst), exited));
            service.publish_exit(&task, ended).await;
        });
    }

    async fn publish_exit(&self, task: &TaskEntry, ended: entry::Ended) {
        let event = TaskExit {
            container_id: task.id.clone(),
            id: task.id.clone(),
            pid: task.pid.load(Ordering::SeqCst),
            exit_status: ended.status,
            exited_at: Some(timestamp(ended.at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event)).await;
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        let workload = match Self::task_kind(Path::new(&req.bundle))? {
            TaskKind::Sandbox => Workload::Sandbox,
            TaskKind::Vm(plan) => self.create_vm(&req, plan).await?,
        };
        let task = Arc::new(TaskEntry::new(&req, workload));
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).insert(req.id.clone(), task);
        let event = TaskCreate { container_id: req.id, bundle: req.bundle, ..Default::default() };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::CreateTaskResponse { pid: 0, ..Default::default() })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let task = self.task(&req.id)?;
        let pid = match task.vm() {
            Some(vm) => {
                vm.start().await.map_err(internal)?;
                vm.pid().await.unwrap_or(0) as u32
            }
            None => std::process::id(),
        };
        task.pid.store(pid, Ordering::SeqCst);
        task.started.store(true, Ordering::SeqCst);
        self.watch_end(task.clone());
        let event = TaskStart { container_id: req.id, pid, ..Default::default() };
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let task = self.task(&req.id)?;
        let ended = task.ended();
        Ok(api::StateResponse {
            id: task.id.clone(),
            bundle: task.bundle.clone(),
            pid: task.pid.load(Ordering::SeqCst),
            status: task.status().into(),
            stdout: task.stdout.clone(),
            exit_status: ended.map_or(0, |e| e.status),
            exited_at: ended.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let task = self.task(&req.id)?;
        let mut ended = task.ended.subscribe();
        let end = *ended.wait_for(Option::is_some).await.map_err(internal)?;
        let end = end.ok_or_else(|| internal("the task's end was not recorded"))?;
        Ok(api::WaitResponse {
            exit_status: end.status,
            exited_at: Some(timestamp(end.at)).into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let task = self.task(&req.id)?;
        if req.signal == 0 || task.ended().is_some() {
            return Ok(api::Empty::default());
        }
        task.killed_by.store(req.signal as i32, Ordering::SeqCst);
        match task.vm() {
            Some(vm) if vm.state() != VmState::Created => {
                vm.stop().await.map_err(internal)?;
            }
            // A sandbox, or a VM never started: nothing runs, so it ends here.
            _ => {
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
            return Err(status(Code::UNIMPLEMENTED, "exec processes are not supported yet"));
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

    async fn exec(&self, _ctx: &TtrpcContext, _req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        Err(status(Code::UNIMPLEMENTED, "exec in a smartvm task needs the guest agent (not yet wired)"))
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, _req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        Err(status(Code::UNIMPLEMENTED, "terminals in a smartvm task need the guest agent (not yet wired)"))
    }

    async fn close_io(&self, _ctx: &TtrpcContext, _req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        Ok(api::Empty::default())
    }

    async fn stats(&self, _ctx: &TtrpcContext, _req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        Err(status(Code::UNIMPLEMENTED, "stats of a smartvm task are not reported yet"))
    }
}
