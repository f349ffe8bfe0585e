//! The spawner thread: every Firecracker process is forked from one thread that lives as long
//! as the program. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
//! the process; forking from whatever thread called `start()` (a `spawn_blocking` worker that
//! tokio retires after 10 s idle, a short-lived `std::thread`) would kill VMs at random.

use std::os::fd::OwnedFd;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

enum Request {
    Spawn(Command, oneshot::Sender<std::io::Result<Child>>),
    /// Answered once every earlier request is done (see [`flush`]).
    Flush(mpsc::Sender<()>),
}

fn spawner() -> std::io::Result<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<Option<mpsc::Sender<Request>>>> = OnceLock::new();
    let slot = SPAWNER.get_or_init(|| Mutex::new(None));
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = guard.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new().name("smartvm-spawner".into()).spawn(move || {
        for request in rx {
            match request {
                Request::Spawn(mut cmd, reply) => {
                    // If the caller was cancelled meanwhile, nobody will ever supervise this
                    // child: end it here rather than leak it.
                    if let Err(Ok(mut orphan)) = reply.send(cmd.spawn()) {
                        let _ = orphan.kill();
                        let _ = orphan.wait();
                    }
                }
                Request::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    })?;
    *guard = Some(tx.clone());
    Ok(tx)
}

/// Spawns `cmd` on the spawner thread.
pub(crate) async fn spawn(cmd: Command) -> std::io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    spawner()?.send(Request::Spawn(cmd, reply)).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer.await.map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Blocks until every spawn requested so far is done, so that a spawn whose caller was
/// cancelled has been ended (for a cancelled start that must leave nothing behind).
pub(crate) fn flush() {
    let (done, wait) = mpsc::channel();
    if spawner().is_ok_and(|tx| tx.send(Request::Flush(done)).is_ok()) {
        let _ = wait.recv();
    }
}

/// A pidfd for `pid` (our unreaped child), readable once it has exited.
pub(crate) fn pidfd(pid: i32) -> std::io::Result<AsyncFd<OwnedFd>> {
    let owned = super::pidfd::open(pid, true)?;
    // SAFETY: the OwnedFd keeps the descriptor open and unchanged for as long as the AsyncFd
    // that owns it lives.
    unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE).map_err(|e| e.into()) }
}
