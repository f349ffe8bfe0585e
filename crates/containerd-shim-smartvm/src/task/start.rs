//! A workload task's VM from create to end: its config (kernel, machine, root drive, vsock),
//! its start (the guest as it boots, or the agent running the task's process), and how its end
//! is learnt and published.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use containerd_shim::TtrpcResult;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::Code;
use smartvm::config::{DriveConfig, VsockConfig};
use smartvm::{MicroVm, VmConfig};

use super::entry::{self, Ended, TaskEntry, Workload};
use super::{agent, chain, console, guard, internal, status, timestamp, vm_id, TaskService};
use crate::process::GuestProcess;
use crate::spec::{Guest, Init, TaskPlan};

/// The guest context id of every task's VM (each VM's vsock is its own socket).
const GUEST_CID: u32 = 3;

impl TaskService {
    /// Where task VMs' vsock sockets live (a private dir of the runtime dir).
    fn vsock_dir(&self) -> PathBuf {
        self.smartvm.options().runtime_dir.join(".shim-vsock")
    }

    /// The VM config of a plan.
    fn vm_config(&self, id: &str, plan: &TaskPlan) -> TtrpcResult<VmConfig> {
        let kernel = match &plan.guest {
            Guest::Probe => smartvm::probe::install_probe_kernel(&self.smartvm.options().data_dir.join("kernels"))
                .map_err(internal)?,
            Guest::Kernel(path) => guard::allowed_kernel(path, &self.smartvm.options().data_dir)?,
        };
        let vsock_dir = self.vsock_dir();
        smartvm::trust::ensure_private_dir(&vsock_dir).map_err(|e| internal(chain(&e)))?;
        let vm_id = vm_id(&self.namespace, id);
        let vsock = VsockConfig::new(GUEST_CID, vsock_dir.join(format!("{vm_id}.sock")));
        Ok(VmConfig::new(kernel)
            .with_id(vm_id)
            .with_machine(u32::from(plan.vcpus), u64::from(plan.mem_mib))
            .with_boot_args(plan.boot_args.clone())
            .with_vsock(vsock))
    }

    /// The VM of a workload task, its root drive made from the snapshot's mounts (with the
    /// guest agent installed when it is the guest's init).
    pub(super) async fn create_vm(&self, req: &api::CreateTaskRequest, plan: &TaskPlan) -> TtrpcResult<Workload> {
        let mut cfg = self.vm_config(&req.id, plan)?;
        let agent = match (&plan.guest, &plan.init) {
            (Guest::Kernel(_), Init::Agent(_)) => Some(guard::guest_agent(&self.smartvm.options().data_dir)?),
            _ => None,
        };
        let image = crate::rootfs::ensure(&req.rootfs, Path::new(&req.bundle), &self.rootfs_cache(), agent.as_deref())
            .await
            .map_err(|e| internal(chain(&e)))?;
        if let Some(image) = image {
            cfg = cfg.with_drive(DriveConfig::new("rootfs", image).root());
        }
        let vm = self.smartvm.create_vm(&cfg).map_err(|e| status(Code::INVALID_ARGUMENT, format!("smartvm: {e}")))?;
        Ok(Workload::Vm(vm))
    }

    /// Boots the VM; with the agent as init, waits for it and starts the task's process.
    /// A start that fails stops the VM again (the task stays, for containerd's delete).
    pub(super) async fn start_vm(&self, task: &Arc<TaskEntry>, vm: &Arc<MicroVm>) -> TtrpcResult<u32> {
        vm.start().await.map_err(|e| internal(chain(&e)))?;
        let pid = vm.pid().await.unwrap_or(0) as u32;
        let Init::Agent(request) = &task.init else {
            self.watch_console_end(task.clone());
            return Ok(pid);
        };
        let started = async {
            let client = agent::ready(vm, agent::BOOT_TIMEOUT)
                .await
                .map_err(|e| status(Code::FAILED_PRECONDITION, format!("smartvm: {}", chain(&e))))?;
            let process = GuestProcess::start(&client, request.clone(), task.io.clone())
                .await
                .map_err(|e| internal(format!("the task's process: {}", chain(&e))))?;
            Ok::<_, containerd_shim_protos::ttrpc::Error>((client, Arc::new(process)))
        };
        match started.await {
            Ok((client, process)) => {
                let _ = task.init_process.set(process.clone());
                self.watch_process_end(task.clone(), vm.clone(), client, process);
                Ok(pid)
            }
            Err(e) => {
                let _ = vm.stop().await;
                Err(e)
            }
        }
    }

    /// Console mode: relays the console to stdout; the end is the guest's report, else the
    /// kill, else how Firecracker ended.
    fn watch_console_end(&self, task: Arc<TaskEntry>) {
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

    /// Agent mode: the task ends with its process (whose status it takes); the VM goes with it.
    fn watch_process_end(
        &self,
        task: Arc<TaskEntry>,
        vm: Arc<MicroVm>,
        client: smartvm::guest::GuestClient,
        process: Arc<GuestProcess>,
    ) {
        let service = self.clone();
        tokio::spawn(async move {
            let end = process.wait().await;
            agent::power_off(&vm, &client).await;
            let killed_by = task.killed_by.load(Ordering::SeqCst);
            let status = match end {
                crate::process::ProcessEnd::Lost if killed_by > 0 => 128 + killed_by as u32,
                end => end.status(),
            };
            let ended = task.end(status);
            service.publish_exit(&task, ended).await;
        });
    }

    /// Sends `signal` to the task: the agent passes it to the task's process; SIGKILL (or a
    /// task without its process) stops the VM.
    pub(super) async fn kill_vm(&self, task: &TaskEntry, vm: &MicroVm, signal: u32) -> TtrpcResult<()> {
        task.killed_by.store(signal as i32, Ordering::SeqCst);
        if let Some(process) = task.init_process.get().filter(|_| signal != 9) {
            if process.signal(signal as i32).is_ok() {
                return Ok(());
            }
        }
        vm.stop().await.map_err(|e| internal(chain(&e)))?;
        Ok(())
    }

    pub(super) async fn publish_exit(&self, task: &TaskEntry, ended: Ended) {
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
