//! The spawner thread: every Firecracker process is forked from one thread that lives as long
//! as the program. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
//! the process; forking from whatever thread called `start()` (a `spawn_blocking` worker that
//! tokio retires after 10 s idle, a short-lived `std::thread`) would kill VMs at random.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

type Request = (Command, oneshot::Sender<std::io::Result<Child>>);

fn spawner() -> std::io::Result<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<Option<mpsc::Sender<Request>>>> = OnceLock::new();
    let slot = SPAWNER.get_or_init(|| Mutex::new(None));
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = guard.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new().name("smartvm-spawner".into()).spawn(move || {
        for (mut cmd, reply) in rx {
            let _ = reply.send(cmd.spawn());
        }
    })?;
    *guard = Some(tx.clone());
    Ok(tx)
}

/// Spawns `cmd` on the spawner thread.
pub(crate) async fn spawn(cmd: Command) -> std::io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    spawner()?.send((cmd, reply)).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer.await.map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// A pidfd for `pid` (our unreaped child), readable once it has exited.
pub(crate) fn pidfd(pid: i32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open returns a new descriptor (or -1), owned by the OwnedFd below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::O_NONBLOCK) } as i32;
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns; the OwnedFd keeps it open and
    // unchanged for as long as the AsyncFd that owns it lives.
    unsafe {
        let owned = OwnedFd::from_raw_fd(fd);
        AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE).map_err(|e| e.into())
    }
}
