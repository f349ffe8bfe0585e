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

/// Sends `signal` through `pidfd`: it can only reach the process the pidfd was opened for (an
/// exited one answers `ESRCH`, never a process that reused its pid).
pub(crate) fn send_signal(pidfd: &AsyncFd<OwnedFd>, signal: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd, a plain signal number, no siginfo.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.get_ref().as_raw_fd(), signal, 0usize, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Blocks until the process behind `pidfd` has exited, at most `timeout`; true when it has.
pub(crate) fn wait_exit_blocking(pidfd: &AsyncFd<OwnedFd>, timeout: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd { fd: pidfd.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: a valid pollfd array of length 1.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) == 1 }
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
