//! One reaper for every child: as PID 1 the agent must collect orphans too, so it waits for any
//! child (`waitpid(-1)`) and hands each status to whoever spawned that process.
//!
//! Invariant: the agent runs on a single-threaded runtime, so between `spawn` and registering
//! the pid no reap can happen (the reaper task cannot run in between), and std's own wait for
//! a child whose `exec` failed never races with it.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use smartvm_guest_protocol::ExitStatus;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

type Waiting = HashMap<i32, oneshot::Sender<ExitStatus>>;

/// Spawns processes and reports their exits.
#[derive(Clone)]
pub struct Reaper {
    waiting: Arc<Mutex<Waiting>>,
}

impl Reaper {
    /// Starts reaping (inside the runtime).
    pub fn start() -> io::Result<Reaper> {
        let mut children = signal(SignalKind::child())?;
        let reaper = Reaper { waiting: Arc::default() };
        let task = reaper.clone();
        tokio::spawn(async move {
            task.reap_ready();
            while children.recv().await.is_some() {
                task.reap_ready();
            }
        });
        Ok(reaper)
    }

    /// Spawns `command`; the receiver gets its exit status.
    pub fn spawn(&self, command: &mut Command) -> io::Result<(Child, oneshot::Receiver<ExitStatus>)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let child = command.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Collects every child that has ended; orphans' statuses are dropped.
    fn reap_ready(&self) {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, ExitStatus::Signal(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(tx) = waiting.remove(&pid.as_raw()) {
                let _ = tx.send(status);
            }
        }
    }
}
