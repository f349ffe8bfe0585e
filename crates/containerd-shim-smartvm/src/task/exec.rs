//! Processes exec'd in a task's guest (`ctr task exec`, `kubectl exec`): made from the exec's
//! OCI process spec, started through the guest agent, their ends kept and published.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError};

use containerd_shim::TtrpcResult;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{TaskExecAdded, TaskExecStarted, TaskExit};
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::Code;

use super::entry::{EndRecord, ExecEntry, TaskEntry};
use super::{agent, chain, status, timestamp, TaskService};
use crate::process::{GuestProcess, ProcessIo};

impl TaskService {
    /// Records an exec (not started yet); refused unless the task's VM runs.
    pub(super) async fn add_exec(&self, req: api::ExecProcessRequest) -> TtrpcResult<()> {
        let task = self.task(&req.id)?;
        if task.vm().is_none() {
            return Err(status(Code::FAILED_PRECONDITION, "a pod sandbox has no guest to run processes in"));
        }
        if !task.started.load(Ordering::SeqCst) || task.ended().is_some() {
            return Err(status(Code::FAILED_PRECONDITION, format!("task {} is not running", task.id)));
        }
        let request = crate::spec::exec_request(&req.spec.value)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("smartvm: {e}")))?;
        let exec = ExecEntry {
            id: req.exec_id.clone(),
            request,
            io: ProcessIo { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr },
            process: OnceLock::new(),
            ended: EndRecord::default(),
        };
        {
            let mut execs = task.execs.lock().unwrap_or_else(PoisonError::into_inner);
            if execs.contains_key(&req.exec_id) {
                return Err(status(Code::ALREADY_EXISTS, format!("exec {} exists in task {}", req.exec_id, task.id)));
            }
            execs.insert(req.exec_id.clone(), Arc::new(exec));
        }
        let event = TaskExecAdded { container_id: task.id.clone(), exec_id: req.exec_id, ..Default::default() };
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event)).await;
        Ok(())
    }

    /// Starts an exec through the guest agent; its end is kept and published as it comes.
    pub(super) async fn start_exec(&self, task: &Arc<TaskEntry>, exec: Arc<ExecEntry>) -> TtrpcResult<u32> {
        if exec.process.get().is_some() {
            return Err(status(Code::FAILED_PRECONDITION, format!("exec {} was started", exec.id)));
        }
        let Some(vm) = task.vm() else { return Err(status(Code::FAILED_PRECONDITION, "no guest")) };
        let client = agent::ready(vm, agent::ANSWER_TIMEOUT)
            .await
            .map_err(|e| status(Code::FAILED_PRECONDITION, format!("smartvm: {}", chain(&e))))?;
        let process = GuestProcess::start(&client, exec.request.clone(), exec.io.clone())
            .await
            .map_err(|e| status(Code::INTERNAL, format!("smartvm: exec {}: {}", exec.id, chain(&e))))?;
        let process = Arc::new(process);
        let pid = process.pid();
        let _ = exec.process.set(process.clone());
        let (service, task_id, exec_for_end) = (self.clone(), task.id.clone(), exec.clone());
        tokio::spawn(async move {
            let ended = exec_for_end.ended.set(process.wait().await.status());
            let event = TaskExit {
                container_id: task_id,
                id: exec_for_end.id.clone(),
                pid,
                exit_status: ended.status,
                exited_at: Some(timestamp(ended.at)).into(),
                ..Default::default()
            };
            service.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event)).await;
        });
        let event =
            TaskExecStarted { container_id: task.id.clone(), exec_id: exec.id.clone(), pid, ..Default::default() };
        self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event)).await;
        Ok(pid)
    }

    /// An exec of task `id`, or `NOT_FOUND`.
    pub(super) fn exec_of(&self, id: &str, exec_id: &str) -> TtrpcResult<(Arc<TaskEntry>, Arc<ExecEntry>)> {
        let task = self.task(id)?;
        let exec =
            task.exec(exec_id).ok_or_else(|| status(Code::NOT_FOUND, format!("no exec {exec_id} in task {id}")))?;
        Ok((task, exec))
    }

    /// Sends `signal` to an exec (one never started just ends).
    pub(super) fn kill_exec(&self, exec: &ExecEntry, signal: u32) -> TtrpcResult<()> {
        match exec.process.get() {
            Some(process) if exec.ended.get().is_none() => process
                .signal(signal as i32)
                .map_err(|e| status(Code::INTERNAL, format!("smartvm: exec {}: {}", exec.id, chain(&e)))),
            Some(_) => Ok(()),
            None => {
                exec.ended.set(128 + signal);
                Ok(())
            }
        }
    }

    /// Forgets an exec that ended (or never started).
    pub(super) fn delete_exec(&self, task: &TaskEntry, exec: &ExecEntry) -> TtrpcResult<api::DeleteResponse> {
        if exec.process.get().is_some() && exec.ended.get().is_none() {
            return Err(status(Code::FAILED_PRECONDITION, format!("exec {} is still running", exec.id)));
        }
        task.execs.lock().unwrap_or_else(PoisonError::into_inner).remove(&exec.id);
        let ended = exec.ended.get();
        Ok(api::DeleteResponse {
            pid: exec.pid(),
            exit_status: ended.map_or(0, |e| e.status),
            exited_at: ended.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }
}
