//! The Task service: each task is one smartvm microVM, created from the bundle, started on
//! `Start`, its console relayed to the task's stdout, its end reported as the task's exit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
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
use containerd_shim_protos::types::task::Status;
use futures_util::StreamExt;
use smartvm::{MicroVm, SmartVm, SmartVmOptions, VmConfig, VmState};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::spec::{self, Guest};

/// How a task ended.
#[derive(Debug, Clone, Copy)]
struct Ended {
    status: u32,
    at: SystemTime,
}

/// One task: its VM and what containerd gave it.
struct TaskVm {
    id: String,
    bundle: String,
    stdout: String,
    /// The snapshot's mounts, whose image is dropped with the task.
    rootfs: Vec<api::Mount>,
    vm: Arc<MicroVm>,
    pid: AtomicU32,
    /// The signal a `Kill` sent (0: none), for the exit status of a stopped task.
    killed_by: AtomicI32,
    ended: watch::Sender<Option<Ended>>,
}

/// The shim's Task service.
#[derive(Clone)]
pub struct TaskService {
    namespace: String,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    smartvm: Arc<SmartVm>,
    tasks: Arc<Mutex<HashMap<String, Arc<TaskVm>>>>,
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

/// The smartvm VM id of task `id` in `namespace` (`[A-Za-z0-9-]`, at most 64 bytes).
pub fn vm_id(namespace: &str, id: &str) -> String {
    let clean: String = format!("ctr-{namespace}-{id}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    clean.chars().take(64).collect()
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

    fn task(&self, id: &str) -> TtrpcResult<Arc<TaskVm>> {
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.get(id).cloned().ok_or_else(|| status(Code::NOT_FOUND, format!("no task {id}")))
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = ttrpc::context::Context::default();
        if let Err(e) = self.publisher.publish(ctx, topic, &self.namespace, event).await {
            log::warn!("publishing {topic}: {e}");
        }
    }

    /// The VM config of a bundle; an unusable bundle is `INVALID_ARGUMENT` with the reason.
    fn vm_config(&self, id: &str, bundle: &Path) -> TtrpcResult<VmConfig> {
        let config = std::fs::read_to_string(bundle.join("config.json"))
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("{}/config.json: {e}", bundle.display())))?;
        let plan = spec::plan(&config).map_err(|e| status(Code::INVALID_ARGUMENT, format!("smartvm: {e}")))?;
        let kernel = match plan.guest {
            Guest::Probe => smartvm::probe::install_probe_kernel(&self.smartvm.options().data_dir.join("kernels"))
                .map_err(internal)?,
            Guest::Kernel(path) => allowed_kernel(&path, &self.smartvm.options().data_dir)?,
        };
        Ok(VmConfig::new(kernel)
            .with_id(vm_id(&self.namespace, id))
            .with_machine(u32::from(plan.vcpus), u64::from(plan.mem_mib))
            .with_boot_args(plan.boot_args))
    }

    /// Relays the console to stdout, then records and publishes the end.
    fn watch_end(&self, task: Arc<TaskVm>) {
        let service = self.clone();
        tokio::spawn(async move {
            relay_console(&task).await;
            let exited = task.vm.exited().await;
            let lines = task.vm.console().lines();
            let reported = smartvm::guest::protocol::reported_exit(lines.iter().map(String::as_str));
            let signal = task.killed_by.load(Ordering::SeqCst);
            let status = match (reported, exited) {
                (Some(code), _) => u32::from(code),
                _ if signal > 0 => 128 + signal as u32,
                (None, Some(info)) => info.code.map_or(128 + info.signal.unwrap_or(9) as u32, |c| c as u32),
                (None, None) => 255,
            };
            let ended = Ended { status, at: SystemTime::now() };
            task.ended.send_replace(Some(ended));
            let event = TaskExit {
                container_id: task.id.clone(),
                id: task.id.clone(),
                pid: task.pid.load(Ordering::SeqCst),
                exit_status: status,
                exited_at: Some(timestamp(ended.at)).into(),
                ..Default::default()
            };
            service.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event)).await;
        });
    }
}

/// A kernel must lie under smartvm's data dir or a dir in `SMARTVM_SHIM_KERNEL_DIRS`
/// (colon-separated): a pod spec may not name any file of the host.
fn allowed_kernel(path: &Path, data_dir: &Path) -> TtrpcResult<PathBuf> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| status(Code::INVALID_ARGUMENT, format!("io.smartvm.kernel {}: {e}", path.display())))?;
    let extra = std::env::var_os("SMARTVM_SHIM_KERNEL_DIRS").unwrap_or_default();
    let mut allowed = vec![data_dir.to_path_buf()];
    allowed.extend(std::env::split_paths(&extra).filter(|p| p.is_absolute()));
    if allowed.iter().filter_map(|d| std::fs::canonicalize(d).ok()).any(|d| real.starts_with(d)) {
        return Ok(real);
    }
    let dirs: Vec<String> = allowed.iter().map(|d| d.display().to_string()).collect();
    Err(status(
        Code::PERMISSION_DENIED,
        format!("io.smartvm.kernel {} is outside the allowed dirs ({})", path.display(), dirs.join(", ")),
    ))
}

/// Copies the console (from its first line) into the task's stdout FIFO until the console ends.
async fn relay_console(task: &TaskVm) {
    let mut lines = Box::pin(task.vm.console().stream(true));
    let mut stdout = match task.stdout.as_str() {
        "" => None,
        path => tokio::net::unix::pipe::OpenOptions::new().open_sender(path).ok(),
    };
    while let Some(line) = lines.next().await {
        if let Some(pipe) = stdout.as_mut() {
            if pipe.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                stdout = None;
            }
        }
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        let mut cfg = self.vm_config(&req.id, Path::new(&req.bundle))?;
        let cache = self.rootfs_cache();
        let image = crate::rootfs::ensure(&req.rootfs, Path::new(&req.bundle), &cache)
            .await
            .map_err(|e| internal(chain(&e)))?;
        if let Some(image) = image {
            cfg = cfg.with_drive(smartvm::config::DriveConfig::new("rootfs", image).root());
        }
        let vm = self.smartvm.create_vm(&cfg).map_err(|e| status(Code::INVALID_ARGUMENT, format!("smartvm: {e}")))?;
        let task = Arc::new(TaskVm {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            stdout: req.stdout.clone(),
            rootfs: req.rootfs.clone(),
            vm,
            pid: AtomicU32::new(0),
            killed_by: AtomicI32::new(0),
            ended: watch::Sender::new(None),
        });
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).insert(req.id.clone(), task);
        let event = TaskCreate { container_id: req.id, bundle: req.bundle, ..Default::default() };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::CreateTaskResponse { pid: 0, ..Default::default() })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let task = self.task(&req.id)?;
        task.vm.start().await.map_err(internal)?;
        let pid = task.vm.pid().await.unwrap_or(0) as u32;
        task.pid.store(pid, Ordering::SeqCst);
        self.watch_end(task.clone());
        let event = TaskStart { container_id: req.id, pid, ..Default::default() };
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let task = self.task(&req.id)?;
        let ended = *task.ended.borrow();
        let state = match (ended, task.vm.state()) {
            (Some(_), _) => Status::STOPPED,
            (None, VmState::Created | VmState::Configuring) => Status::CREATED,
            (None, VmState::Paused) => Status::PAUSED,
            (None, VmState::Running) => Status::RUNNING,
            (None, _) => Status::STOPPED,
        };
        Ok(api::StateResponse {
            id: task.id.clone(),
            bundle: task.bundle.clone(),
            pid: task.pid.load(Ordering::SeqCst),
            status: state.into(),
            stdout: task.stdout.clone(),
            exit_status: ended.map_or(0, |e| e.status),
            exited_at: ended.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let task = self.task(&req.id)?;
        let mut ended = task.ended.subscribe();
        let end = ended.wait_for(Option::is_some).await.map_err(internal)?.expect("waited for Some");
        Ok(api::WaitResponse {
            exit_status: end.status,
            exited_at: Some(timestamp(end.at)).into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let task = self.task(&req.id)?;
        if req.signal == 0 || task.ended.borrow().is_some() {
            return Ok(api::Empty::default());
        }
        task.killed_by.store(req.signal as i32, Ordering::SeqCst);
        if task.vm.state() == VmState::Created {
            // Never started: nothing runs, so it ends here.
            task.ended.send_replace(Some(Ended { status: 128 + req.signal, at: SystemTime::now() }));
            return Ok(api::Empty::default());
        }
        task.vm.stop().await.map_err(internal)?;
        Ok(api::Empty::default())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            return Err(status(Code::UNIMPLEMENTED, "exec processes are not supported yet"));
        }
        let task = self.task(&req.id)?;
        self.smartvm.remove_vm(task.vm.id()).await.map_err(internal)?;
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(&req.id);
        crate::rootfs::forget(&task.rootfs, &self.rootfs_cache());
        let ended = task.ended.borrow().unwrap_or(Ended { status: 137, at: SystemTime::now() });
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
        self.task(&req.id)?.vm.pause().await.map_err(internal)?;
        let event = TaskPaused { container_id: req.id, ..Default::default() };
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event)).await;
        Ok(api::Empty::default())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.task(&req.id)?.vm.resume().await.map_err(internal)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids_are_safe_and_bounded() {
        assert_eq!(vm_id("default", "t1"), "ctr-default-t1");
        assert_eq!(vm_id("k8s.io", "a/b c"), "ctr-k8s-io-a-b-c");
        assert_eq!(vm_id("ns", &"x".repeat(100)).len(), 64);
    }

    #[test]
    fn a_kernel_outside_the_allowed_dirs_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let inside = data.path().join("vmlinux");
        std::fs::write(&inside, "k").unwrap();
        assert!(allowed_kernel(&inside, data.path()).is_ok());
        let outside = allowed_kernel(Path::new("/etc/hostname"), data.path()).unwrap_err();
        assert!(outside.to_string().contains("outside the allowed dirs"), "{outside}");
        assert!(allowed_kernel(Path::new("/no/such/kernel"), data.path()).is_err());
    }
}
