//! Spawning a child with `clone(CLONE_VM | CLONE_VFORK)`, the way `posix_spawn` does, plus the
//! few steps Firecracker needs between the clone and the exec (a parent-death signal or a
//! session of its own, the umask, a private bind mount).
//!
//! Why not `std::process::Command`: as soon as a `pre_exec` hook exists it forks, and a fork
//! copies the page tables of a large, many-threaded program. Measured on this project's 2-core
//! machine with both cores busy, `Command::spawn` took 2.2–2.6 ms per spawn with the hook
//! against 0.9–1.5 ms through `posix_spawn`: about a millisecond per VM, serialized on the
//! cores, when a hundred VMs start at once.
//!
//! The child borrows the parent's memory (the spawning thread is suspended until the child
//! execs or exits), so it only reads what was prepared before the clone and calls raw
//! syscalls: no allocation, no locks, no panics. Every signal is blocked around the clone, and
//! the child resets every handler to the default before unblocking, so no handler of this
//! program ever runs in the child.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int, c_void};

/// What the child does between the clone and the exec, in this order.
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    /// SIGKILL the child when the spawning thread exits; the pid of this process, to notice
    /// that it is already gone.
    pub death_signal: Option<libc::pid_t>,
    /// A session of its own (a detached process: no terminal signals from ours).
    pub new_session: bool,
    /// The file-creation mask.
    pub umask: Option<libc::mode_t>,
    /// A private mount namespace with `.0` bind-mounted on `.1`.
    pub bind_mount: Option<(CString, CString)>,
    /// The network namespace to join (`setns`) first: the caller's, when a thread in another
    /// namespace clones the child on its behalf.
    pub network_namespace: Option<OwnedFd>,
}

/// A program with its arguments, environment, stdio and setup, laid out so that the child
/// need not allocate.
pub(crate) struct Prepared {
    program: CString,
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    stdio: [OwnedFd; 3],
    setup: ChildSetup,
    signal_limit: c_int,
}

// SAFETY: the raw pointers point into the heap buffers of the CStrings owned alongside them
// (`program` and `_strings`), which do not move when this value moves.
unsafe impl Send for Prepared {}

impl Prepared {
    /// `program` with `args` (after argv[0], which is `program`), this process's environment,
    /// and `stdio` as the child's fds 0, 1 and 2.
    pub(crate) fn new(
        program: &Path,
        args: &[OsString],
        stdio: [OwnedFd; 3],
        setup: ChildSetup,
    ) -> std::io::Result<Self> {
        let program = c_string(program.as_os_str())?;
        let mut strings = Vec::with_capacity(args.len() + 1);
        strings.push(program.clone());
        for a in args {
            strings.push(c_string(a)?);
        }
        let argc = strings.len();
        for (key, value) in std::env::vars_os() {
            let mut entry = key;
            entry.push("=");
            entry.push(value);
            strings.push(c_string(&entry)?);
        }
        let pointers = |s: &[CString]| s.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
        let (argv, envp) = (pointers(&strings[..argc]), pointers(&strings[argc..]));
        let [stdin, stdout, stderr] = stdio;
        let stdio = [above_stdio(stdin)?, above_stdio(stdout)?, above_stdio(stderr)?];
        Ok(Self { program, _strings: strings, argv, envp, stdio, setup, signal_limit: libc::SIGRTMAX() })
    }

    /// Whether the child gets a death signal tied to the thread that clones it.
    pub(crate) fn dies_with_thread(&self) -> bool {
        self.setup.death_signal.is_some()
    }

    /// Makes the child join the network namespace `fd` refers to before anything else.
    pub(crate) fn join_network_namespace(&mut self, fd: OwnedFd) {
        self.setup.network_namespace = Some(fd);
    }
}

fn c_string(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in an argument"))
}

/// `fd` itself, or a close-on-exec copy of it at 3 or above: the child moves its stdio onto
/// 0, 1 and 2 one after the other, and a source already sitting on one of them would be lost.
fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicates a valid descriptor; the new one is owned by the OwnedFd below.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// The step of the child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    DeathSignal = 1,
    Namespace,
    Session,
    Mount,
    Stdio,
    Exec,
}

impl Step {
    fn from_code(code: i32) -> Self {
        match code {
            1 => Step::DeathSignal,
            2 => Step::Namespace,
            3 => Step::Session,
            4 => Step::Mount,
            5 => Step::Stdio,
            _ => Step::Exec,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Step::DeathSignal => "set the parent-death signal",
            Step::Namespace => "join the caller's network namespace",
            Step::Session => "start a session",
            Step::Mount => "bind-mount in a private mount namespace",
            Step::Stdio => "set up stdin, stdout and stderr",
            Step::Exec => "execute the program",
        }
    }
}

/// A step of the child between clone and exec failed.
#[derive(Debug, thiserror::Error)]
#[error("the child could not {}", step.describe())]
struct SetupFailed {
    step: Step,
    #[source]
    source: std::io::Error,
}

/// What the child reports back through the shared memory.
struct Shared<'a> {
    prepared: &'a Prepared,
    step: AtomicI32,
    errno: AtomicI32,
}

/// A stack for the child, with a guard page below it; reusable once a spawn has returned (the
/// child has exec'd or exited by then).
pub(crate) struct ChildStack {
    map: *mut c_void,
    len: usize,
}

// SAFETY: a private mapping owned by this value alone.
unsafe impl Send for ChildStack {}

const GUARD: usize = 4096;
const STACK: usize = 128 * 1024;

impl ChildStack {
    pub(crate) fn new() -> std::io::Result<Self> {
        let len = STACK + GUARD;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
        // SAFETY: a fresh anonymous mapping, unmapped in Drop; its lowest page becomes the guard.
        unsafe {
            let map = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0);
            if map == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let stack = Self { map, len };
            if libc::mprotect(map, GUARD, libc::PROT_NONE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    fn top(&mut self) -> *mut c_void {
        // The stack grows down from the end of the mapping, which is page-aligned.
        self.map.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used by any child.
        unsafe { libc::munmap(self.map, self.len) };
    }
}

/// A child that has exec'd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    /// Its start time as `/proc/<pid>/stat` shows it (clock ticks since boot), when known
    /// without reading `/proc` (see [`start_ticks`]).
    pub start_time: Option<u64>,
}

/// Nanoseconds of `CLOCK_BOOTTIME`, the clock the kernel stamps a new process's start with.
fn boottime_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The start time `/proc/<pid>/stat` shows for a process cloned between the `CLOCK_BOOTTIME`
/// readings `before` and `after`: the kernel stamps the start from that clock during the clone
/// and shows it in clock ticks, so when both readings fall in one tick, that tick is it.
/// `None` when they straddle a tick boundary. (Reading `/proc` right after the spawn costs
/// tens of microseconds per VM.)
fn start_ticks(before: u64, after: u64) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&t| t > 0)?;
    let per_tick = 1_000_000_000 / ticks_per_second;
    (before / per_tick == after / per_tick).then_some(before / per_tick)
}

/// Starts `prepared`; returns the child once it has exec'd. A failure of any setup step or of
/// the exec itself is an error (the child is reaped).
pub(crate) fn spawn(prepared: &Prepared, stack: &mut ChildStack) -> std::io::Result<Spawned> {
    let shared = Shared { prepared, step: AtomicI32::new(0), errno: AtomicI32::new(0) };
    let before = boottime_ns();
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: every signal is blocked around the clone and restored after; the child runs
    // `child_main` on its own stack, reading `shared`, which outlives it: CLONE_VFORK suspends
    // this thread until the child has exec'd or exited.
    let (pid, clone_error) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let arg = &shared as *const Shared as *mut c_void;
        let pid = libc::clone(child_main, stack.top(), flags, arg);
        let clone_error = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        (pid, clone_error)
    };
    if pid < 0 {
        return Err(clone_error);
    }
    let errno = shared.errno.load(Ordering::Acquire);
    if errno == 0 {
        return Ok(Spawned { pid, start_time: start_ticks(before, boottime_ns()) });
    }
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    let source = std::io::Error::from_raw_os_error(errno);
    match Step::from_code(shared.step.load(Ordering::Acquire)) {
        Step::Exec => Err(source),
        step => Err(std::io::Error::new(source.kind(), SetupFailed { step, source })),
    }
}

/// The child: sets up, execs, and only if that fails reports the step and errno and exits.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` of `spawn`, alive while the parent thread is suspended.
    let shared = unsafe { &*(arg as *const Shared) };
    // SAFETY: runs in the vfork child, as `setup_and_exec` requires.
    let (step, errno) = unsafe { setup_and_exec(shared.prepared) };
    shared.step.store(step as i32, Ordering::Release);
    shared.errno.store(if errno == 0 { libc::EINVAL } else { errno }, Ordering::Release);
    // SAFETY: ends the child without running anything of the parent's (no atexit, no flush).
    unsafe { libc::_exit(127) }
}

/// The steps between clone and exec; returns only on failure.
///
/// # Safety
/// Only in a `CLONE_VM | CLONE_VFORK` child with every signal blocked.
unsafe fn setup_and_exec(p: &Prepared) -> (Step, i32) {
    let errno = || unsafe { *libc::__errno_location() };
    default_signal_handlers(p.signal_limit);
    if let Some(parent) = p.setup.death_signal {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return (Step::DeathSignal, errno());
        }
        // The parent may have died before the signal was armed.
        if libc::getppid() != parent {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    if let Some(fd) = &p.setup.network_namespace {
        if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            return (Step::Namespace, errno());
        }
    }
    if p.setup.new_session && libc::setsid() < 0 {
        return (Step::Session, errno());
    }
    if let Some(mask) = p.setup.umask {
        libc::umask(mask);
    }
    if let Some((source, target)) = &p.setup.bind_mount {
        if !private_bind_mount(source.as_ptr(), target.as_ptr()) {
            return (Step::Mount, errno());
        }
    }
    for (target, fd) in (0..).zip(&p.stdio) {
        // dup2 leaves the copy without close-on-exec; the sources are all above 2.
        if libc::dup2(fd.as_raw_fd(), target) < 0 {
            return (Step::Stdio, errno());
        }
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    (Step::Exec, errno())
}

/// Every signal this program handles back to the default action (they would run this
/// program's handlers in the child), and SIGPIPE too, as `std::process::Command` does.
///
/// # Safety
/// Only in the vfork child.
unsafe fn default_signal_handlers(limit: c_int) {
    for signal in 1..=limit {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
            continue; // signals reserved by libc
        }
        let handled = current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
        if handled || signal == libc::SIGPIPE {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
    }
}

/// A private mount namespace with `source` bind-mounted on `target`; false on failure.
///
/// # Safety
/// Two NUL-terminated strings; in a child about to exec.
unsafe fn private_bind_mount(source: *const c_char, target: *const c_char) -> bool {
    let null = std::ptr::null();
    libc::unshare(libc::CLONE_NEWNS) == 0
        && libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, null.cast()) == 0
        && libc::mount(source, target, null, libc::MS_BIND, null.cast()) == 0
}

#[cfg(test)]
mod tests;
