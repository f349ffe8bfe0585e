//! Where Firecracker processes are cloned. `PR_SET_PDEATHSIG` fires when the *thread* that
//! cloned the child exits, not the process; cloning from whatever thread called `start()` (a
//! `spawn_blocking` worker that tokio retires after 10 s idle, a short-lived `std::thread`)
//! would kill VMs at random. So a child with a death signal is cloned from one of a few
//! spawner threads that live as long as the program, unless the caller is the main thread,
//! which lives as long as the process anyway; a child without one (a detached VM) is cloned
//! right where it is asked for. Many starts at once still go to the spawner threads: they
//! clone in parallel while the caller drives the other starts.
//!
//! A spawner thread lives in the network namespace of the thread that started the spawners;
//! a child cloned there for a caller in another namespace joins the caller's first, so a VM
//! always lands where the thread that started it is (as `ip netns exec` users expect).
//!
//! Why not always the spawner: the hop wakes another thread, and the new Firecracker starts on
//! that thread's CPU rather than the caller's. Measured on this project's 2-vCPU host (1,200
//! boots in random order, raw Firecracker interleaved, 3 runs): boots cloned on the calling
//! thread landed in the host's slow mode (one scheduler tick later) 31–35 % of the time, those
//! cloned on a spawner thread 41–50 %, raw Firecracker 18–33 %. With 100 starts at once, the
//! caller cloning them all cost it 0.2 ms more CPU per VM than the spawner threads did.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::vfork::{ChildStack, Prepared, Spawned};
use super::ExitInfo;

enum Request {
    Spawn(Prepared, oneshot::Sender<std::io::Result<Spawned>>),
    /// Answered once every earlier request is done (see [`flush`]).
    Flush(mpsc::Sender<()>),
}

/// The spawner threads, started on first use: one per CPU (at least two), so that many VMs
/// started at once are cloned in parallel rather than queued behind one thread.
fn spawners() -> std::io::Result<Vec<mpsc::Sender<Request>>> {
    static SPAWNERS: OnceLock<Mutex<Vec<mpsc::Sender<Request>>>> = OnceLock::new();
    let slot = SPAWNERS.get_or_init(|| Mutex::new(Vec::new()));
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_empty() {
        // The threads inherit this thread's namespaces.
        let _ = SPAWNER_NETNS.set(network_namespace());
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        for i in 0..n {
            guard.push(start_spawner(i)?);
        }
    }
    Ok(guard.clone())
}

fn start_spawner(index: usize) -> std::io::Result<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new().name(format!("smartvm-spawner-{index}")).spawn(move || {
        let mut stack: Option<ChildStack> = None;
        for request in rx {
            match request {
                Request::Spawn(prepared, reply) => {
                    let result = clone_with(&mut stack, prepared);
                    // If the caller was cancelled meanwhile, nobody will ever supervise this
                    // child: end it here rather than leak it.
                    if let Err(Ok(orphan)) = reply.send(result) {
                        kill_and_reap(orphan.pid);
                    }
                }
                Request::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    })?;
    Ok(tx)
}

/// Clones `prepared` on this thread with its stack for children in `slot` (made on first use),
/// then closes our copies of the child's stdio: its pipes end when the child's do.
fn clone_with(slot: &mut Option<ChildStack>, prepared: Prepared) -> std::io::Result<Spawned> {
    let stack = match slot {
        Some(stack) => stack,
        None => slot.insert(ChildStack::new()?),
    };
    super::vfork::spawn(&prepared, stack)
}

/// The network namespace of the spawner threads, once they exist.
static SPAWNER_NETNS: OnceLock<Option<NamespaceId>> = OnceLock::new();

/// A namespace's identity: device and inode of its `/proc/.../ns/*` file.
type NamespaceId = (u64, u64);

/// The calling thread's network namespace; `None` where `/proc` does not show it.
fn network_namespace() -> Option<NamespaceId> {
    let meta = std::fs::metadata("/proc/thread-self/ns/net").ok()?;
    Some((std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta)))
}

/// Makes `prepared` join the caller's network namespace when a spawner thread (in another
/// one) clones it. (Joining costs a `setns` in the child; checking costs one `stat`.)
fn follow_callers_namespace(prepared: &mut Prepared) -> std::io::Result<()> {
    let here = network_namespace();
    if here.is_none() || SPAWNER_NETNS.get().copied().flatten() == here {
        return Ok(());
    }
    let fd = std::fs::File::open("/proc/thread-self/ns/net")?;
    prepared.join_network_namespace(fd.into());
    Ok(())
}

/// The next spawner, round robin.
fn spawner() -> std::io::Result<mpsc::Sender<Request>> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let all = spawners()?;
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % all.len();
    Ok(all[i].clone())
}

/// Which thread clones a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloneOn {
    /// The calling thread (it outlives the child's tie to it, or there is no tie).
    Caller,
    /// A spawner thread.
    Spawner,
}

/// Where to clone a child that does (or does not) die with the thread that clones it, asked
/// from the main thread (or not), while other starts are in progress (or not).
fn clone_on(dies_with_thread: bool, on_main_thread: bool, others_starting: bool) -> CloneOn {
    if !others_starting && (!dies_with_thread || on_main_thread) {
        CloneOn::Caller
    } else {
        CloneOn::Spawner
    }
}

/// Starts in progress in this process.
static STARTING: AtomicUsize = AtomicUsize::new(0);

/// One start in progress, counted for as long as this lives (see the module docs).
#[derive(Debug)]
pub(crate) struct StartInProgress(());

impl StartInProgress {
    pub(crate) fn begin() -> Self {
        STARTING.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for StartInProgress {
    fn drop(&mut self) {
        STARTING.fetch_sub(1, Ordering::Relaxed);
    }
}

fn on_main_thread() -> bool {
    // SAFETY: neither call has preconditions.
    unsafe { libc::gettid() == libc::getpid() }
}

/// Clones `prepared` on this thread, with this thread's stack for children.
fn spawn_here(prepared: Prepared) -> std::io::Result<Spawned> {
    thread_local! {
        static STACK: std::cell::RefCell<Option<ChildStack>> = const { std::cell::RefCell::new(None) };
    }
    STACK.with(|slot| clone_with(&mut slot.borrow_mut(), prepared))
}

/// Spawns `prepared`: on this thread when that is safe (see the module docs), else on a
/// spawner thread.
pub(crate) async fn spawn(mut prepared: Prepared) -> std::io::Result<Spawned> {
    let others_starting = STARTING.load(Ordering::Relaxed) > 1;
    if clone_on(prepared.dies_with_thread(), on_main_thread(), others_starting) == CloneOn::Caller {
        return spawn_here(prepared);
    }
    let (reply, answer) = oneshot::channel();
    let spawner = spawner()?;
    follow_callers_namespace(&mut prepared)?;
    spawner.send(Request::Spawn(prepared, reply)).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer.await.map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Blocks until every spawn requested so far is done, so that a spawn whose caller was
/// cancelled has been ended (for a cancelled start that must leave nothing behind).
pub(crate) fn flush() {
    for tx in spawners().unwrap_or_default() {
        let (done, wait) = mpsc::channel();
        if tx.send(Request::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// A pidfd for `pid` (our unreaped child), readable once it has exited.
pub(crate) fn pidfd(pid: i32) -> std::io::Result<AsyncFd<OwnedFd>> {
    let owned = super::pidfd::open(pid, true)?;
    // SAFETY: the OwnedFd keeps the descriptor open and unchanged for as long as the AsyncFd
    // that owns it lives.
    unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE).map_err(|e| e.into()) }
}

/// Waits for our child `pid` and returns how it ended; at once when it has exited (its pidfd
/// is readable).
pub(crate) fn reap(pid: libc::pid_t) -> ExitInfo {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        return match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => ExitInfo { code: Some(code), signal: None },
            Ok(WaitStatus::Signaled(_, signal, _)) => ExitInfo { code: None, signal: Some(signal as i32) },
            Err(nix::errno::Errno::EINTR) => continue,
            _ => ExitInfo { code: None, signal: None },
        };
    }
}

/// Kills our child `pid` and reaps it.
pub(crate) fn kill_and_reap(pid: libc::pid_t) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    reap(pid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_start_clones_on_its_caller_when_no_thread_may_end_before_the_vm() {
        assert_eq!(clone_on(true, false, false), CloneOn::Spawner, "a worker thread may end before the VM");
        assert_eq!(clone_on(true, true, false), CloneOn::Caller, "the main thread lives as long as the process");
        assert_eq!(clone_on(false, false, false), CloneOn::Caller, "a detached child is tied to no thread");
        assert!(!on_main_thread(), "tests run on threads of the harness");
    }

    #[test]
    fn many_starts_at_once_clone_on_the_spawner_threads() {
        for (dies, main) in [(true, true), (false, false), (true, false)] {
            assert_eq!(clone_on(dies, main, true), CloneOn::Spawner);
        }
    }

    /// Runs `readlink /proc/self/ns/net` through [`spawn`] from a thread that moved into a new
    /// network namespace after the spawner threads started; returns (the child's namespace,
    /// the thread's), or `None` when this process may not create namespaces.
    fn namespace_of_a_child_spawned_from_a_new_namespace() -> Option<(String, String)> {
        spawners().unwrap();
        std::thread::spawn(|| {
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return None;
            }
            let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap().display().to_string();
            let (out, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
            let setup = super::super::vfork::ChildSetup {
                death_signal: Some(std::process::id() as libc::pid_t),
                ..Default::default()
            };
            let args = ["/proc/self/ns/net".into()];
            let prepared = Prepared::new("/bin/readlink".as_ref(), &args, [null(), w, null()], setup).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let child = runtime.block_on(spawn(prepared)).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(out), &mut text).unwrap();
            reap(child.pid);
            Some((text.trim().to_string(), here))
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_child_cloned_on_a_spawner_thread_lands_in_the_callers_network_namespace() {
        let Some((child, caller)) = namespace_of_a_child_spawned_from_a_new_namespace() else {
            eprintln!("skipped: this process may not create a network namespace");
            return;
        };
        assert_eq!(child, caller, "the child joined the caller's namespace");
        let spawners = SPAWNER_NETNS.get().copied().flatten().unwrap();
        let here = network_namespace().unwrap();
        assert_eq!(spawners, here, "the spawners run where the harness thread started them");
        assert_ne!(child, std::fs::read_link("/proc/thread-self/ns/net").unwrap().display().to_string());
    }
}
