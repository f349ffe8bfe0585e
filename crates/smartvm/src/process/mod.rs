//! Spawning and supervising one Firecracker process.
//!
//! The child gets a parent-death signal (SIGKILL), so a crashed host program never orphans a VM.
//! Its stdout (the guest serial console) and stderr are captured into [`Console`]s, and its exit
//! is observed as soon as it happens. [`FirecrackerProcess::stop`] runs an ordered [`StopPlan`].

mod command;
mod console;
mod file_watch;
mod jailer;
mod pidfd;
pub(crate) mod spawner;
mod stop;
mod vfork;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::watch;

pub use command::{instance_id, BindMount, FirecrackerCommand, Seccomp};
pub use console::{Console, WaitEnd, DEFAULT_CONSOLE_LINES};
pub use jailer::{JailerConfig, DEFAULT_JAIL_BASE};
pub use stop::{StopOutcome, StopPlan, StopStep};

pub use crate::error::ProcessError;
pub use crate::lifecycle::ExitInfo;

/// Whether this process may give children a private mount namespace (root with
/// CAP_SYS_ADMIN; not in most unprivileged containers). Probed once in a forked child.
pub fn private_mounts_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // SAFETY: the child only calls async-signal-safe functions (unshare, mount, _exit).
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => unsafe {
                let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0;
                libc::_exit(if ok { 0 } else { 1 })
            },
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                matches!(nix::sys::wait::waitpid(child, None), Ok(nix::sys::wait::WaitStatus::Exited(_, 0)))
            }
            Err(_) => false,
        }
    })
}

fn bind_mount_paths(m: &BindMount) -> std::io::Result<(std::ffi::CString, std::ffi::CString)> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    Ok((c(&m.source)?, c(&m.target)?))
}

/// Where to put what the process prints.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    /// Lines kept in memory per stream (default [`DEFAULT_CONSOLE_LINES`]).
    pub buffer_lines: Option<usize>,
    /// Also append the serial console to this file.
    pub console_file: Option<PathBuf>,
    /// The consoles to feed (a VM's own, which exist before its process); new ones without.
    pub consoles: Option<(Console, Console)>,
    /// Let the process outlive this program: no parent-death signal, a session of its own, its
    /// stdout and stderr written to `console.log` and `firecracker.log` in this dir (followed
    /// from there), and never killed when dropped.
    pub detached: Option<PathBuf>,
}

/// The exit code a Firecracker wrote into its log `log` as it ended (`… exit_code=N`), if it
/// did: how a process that is not this program's child ended (a SIGKILL leaves none).
pub fn logged_exit_code(log: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| l.rsplit_once("exit_code=").and_then(|(_, c)| c.trim().parse().ok()))
}

/// The console and log files of a detached process in `dir`.
pub fn detached_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("console.log"), dir.join("firecracker.log"))
}

/// The FIFO a detached process reads its serial console input from: whatever is written to it
/// reaches the guest (`smartvm attach`).
pub fn console_input(dir: &Path) -> PathBuf {
    dir.join("console.in")
}

/// Creates the console input FIFO (`0600`) and opens it read-write for the process's stdin:
/// with a writer of its own, Firecracker never sees the end of its input, whoever attaches.
fn input_fifo(dir: &Path) -> std::io::Result<std::fs::File> {
    let path = console_input(dir);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(std::io::Error::from)?;
    std::fs::OpenOptions::new().read(true).write(true).open(path)
}

impl Drop for FirecrackerProcess {
    /// A process nobody stops any more is killed rather than left running; waits (bounded)
    /// until it is gone so that the resources it held (TAPs, files) are free afterwards.
    fn drop(&mut self) {
        if self.detached || self.exit_info().is_some() {
            return;
        }
        if pidfd::send_signal(self.pidfd.get_ref(), libc::SIGKILL).is_ok() {
            pidfd::wait_exited(self.pidfd.get_ref(), Duration::from_secs(2));
        }
    }
}

/// Sends SIGKILL to `pid` and waits (blocking, at most `timeout`) until it has exited, through a
/// pidfd taken before the signal so a recycled pid cannot be confused with it. True when gone.
pub fn kill_and_wait(pid: i32, timeout: Duration) -> bool {
    let Ok(fd) = pidfd::open(pid, false) else { return true }; // no such process
    let _ = pidfd::send_signal(&fd, libc::SIGKILL);
    pidfd::wait_exited(&fd, timeout)
}

/// Runs `cmd` (stdin closed) and returns its output, or `None` when it did not exit within
/// `timeout` (it is then killed). For short probes and host tools (`firecracker --version`,
/// `mkfs.ext4`), so a program that hangs cannot hang smartvm.
pub fn output_within(
    cmd: &mut std::process::Command,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    output_within_input(cmd, None, timeout)
}

/// [`output_within`] with `input` written to the command's stdin (then closed).
pub fn output_within_input(
    cmd: &mut std::process::Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), input) {
        // A writer thread: a child that never reads cannot block us past the deadline.
        std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &bytes));
    }
    // Read on helper threads so a chatty child cannot block on a full pipe before exiting.
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(r) = r {
                let _ = std::io::Read::read_to_end(&mut std::io::Read::take(r, 1 << 20), &mut out);
            }
            out
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    // Our own unreaped child: its pid cannot be reused before the wait below.
    let exited = pidfd::open(child.id() as i32, false).map_or(true, |fd| pidfd::wait_exited(&fd, timeout));
    if !exited {
        let _ = child.kill();
        child.wait()?;
        return Ok(None); // the readers end when whatever still holds the pipes closes them
    }
    let status = child.wait()?;
    let join = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    Ok(Some(std::process::Output { status, stdout: join(stdout), stderr: join(stderr) }))
}

/// A running (or ended) Firecracker process.
#[derive(Debug)]
pub struct FirecrackerProcess {
    pid: i32,
    /// Its start time in clock ticks (as `/proc/<pid>/stat` shows it), when known at spawn.
    start_time: Option<u64>,
    /// Opened right after spawn; signals go through it, so they never reach a recycled pid.
    pidfd: std::sync::Arc<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    console: Console,
    stderr: Console,
    detached: bool,
}

/// The prepared spawn of `command`: its stdio (pipes, or a detached process's files) and what
/// runs between clone and exec (parent-death signal or a session of its own, umask, the drive
/// mount namespace); with this program's ends of the stdout and stderr pipes.
fn prepare(command: &FirecrackerCommand, output: &OutputOptions) -> std::io::Result<(vfork::Prepared, Option<Pipes>)> {
    let detached = output.detached.is_some();
    let (stdio, pipes) = match &output.detached {
        Some(dir) => {
            let (console, log) = detached_files(dir);
            ([input_fifo(dir)?.into(), output_file(&console)?.into(), output_file(&log)?.into()], None)
        }
        None => {
            let (out, out_child) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let (err, err_child) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let null = std::fs::File::open("/dev/null")?;
            ([null.into(), out_child, err_child], Some(Pipes { out, err }))
        }
    };
    let setup = vfork::ChildSetup {
        death_signal: (!detached).then(|| std::process::id() as libc::pid_t),
        new_session: detached,
        umask: command.umask.map(|m| m as libc::mode_t),
        bind_mount: command.bind_mount.as_ref().map(bind_mount_paths).transpose()?,
        network_namespace: None,
    };
    Ok((vfork::Prepared::new(&command.binary, &command.args(), stdio, setup)?, pipes))
}

/// This program's (read) ends of a child's stdout and stderr.
struct Pipes {
    out: std::os::fd::OwnedFd,
    err: std::os::fd::OwnedFd,
}

/// Follows a detached process's console and log files in `dir` into `console` and `stderr`
/// until `exit` says it ended.
fn follow_detached(dir: &Path, console: &Console, stderr: &Console, mut exit: watch::Receiver<Option<ExitInfo>>) {
    let (console_path, log_path) = detached_files(dir);
    let (ended, ended_rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = exit.wait_for(|e| e.is_some()).await;
        let _ = ended.send(true);
    });
    console.spawn_file_follower(console_path, ended_rx.clone());
    stderr.spawn_file_follower(log_path, ended_rx);
}

/// Opens `path` for appending (created `0600`), for a detached process's output.
fn output_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().create(true).append(true), 0o600).open(path)
}

impl FirecrackerProcess {
    /// Spawns `command`. The child dies with this process (PR_SET_PDEATHSIG = SIGKILL), however
    /// short-lived the calling thread: the clone happens on one of smartvm's long-lived spawner
    /// threads, since the parent-death signal follows the thread that cloned.
    pub async fn spawn(command: &FirecrackerCommand, output: &OutputOptions) -> Result<Self, ProcessError> {
        let file = match &output.console_file {
            Some(path) => Some(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|source| ProcessError::ConsoleFile { path: path.clone(), source })?,
            ),
            None => None,
        };
        let spawn_err = |source| ProcessError::Spawn { binary: command.binary.clone(), source };
        let (prepared, pipes) = prepare(command, output).map_err(spawn_err)?;
        let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd;
        let readers = pipes.map(|p| Ok::<_, std::io::Error>((receiver(p.out)?, receiver(p.err)?)));
        let readers = readers.transpose().map_err(spawn_err)?;
        let detached = output.detached.is_some();
        let vfork::Spawned { pid, start_time } = spawner::spawn(prepared).await.map_err(spawn_err)?;
        let pidfd = match spawner::pidfd(pid) {
            Ok(fd) => std::sync::Arc::new(fd),
            Err(e) => {
                spawner::kill_and_reap(pid);
                return Err(spawn_err(e));
            }
        };
        let lines = output.buffer_lines.unwrap_or(DEFAULT_CONSOLE_LINES);
        let (console, stderr) = output.consoles.clone().unwrap_or_else(|| (Console::new(lines), Console::new(lines)));
        if let Some((out, err)) = readers {
            console.spawn_reader(out, file);
            stderr.spawn_reader(err, None);
        }
        let (tx, exit) = watch::channel(None);
        if let Some(dir) = &output.detached {
            follow_detached(dir, &console, &stderr, exit.clone());
        }
        let watched = pidfd.clone();
        tokio::spawn(async move {
            // The pidfd turns readable when the process has exited; only then is it reaped, so
            // its pid cannot be reused while anything here may still signal it.
            let _ = watched.readable().await;
            let _ = tx.send(Some(spawner::reap(pid)));
        });
        Ok(Self { pid, start_time, pidfd, exit, console, stderr, detached })
    }

    /// Takes over the detached process `pid` whose files are in `dir` (see
    /// [`OutputOptions::detached`]): its console and log are followed from their start, its end
    /// is seen through a pidfd. It is not this program's child, so how it ended is read from
    /// Firecracker's log (`exit_code=N`) when it says.
    pub fn adopt(pid: i32, dir: &Path, consoles: (Console, Console)) -> Result<Self, ProcessError> {
        let fail = |source| ProcessError::Spawn { binary: dir.join("(adopted)"), source };
        let pidfd = std::sync::Arc::new(spawner::pidfd(pid).map_err(fail)?);
        let (console, stderr) = consoles;
        let (tx, exit) = watch::channel(None);
        follow_detached(dir, &console, &stderr, exit.clone());
        let log_path = detached_files(dir).1;
        let watched = pidfd.clone();
        tokio::spawn(async move {
            let _ = watched.readable().await;
            let _ = tx.send(Some(ExitInfo { code: logged_exit_code(&log_path), signal: None }));
        });
        Ok(Self { pid, start_time: None, pidfd, exit, console, stderr, detached: true })
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The start time `/proc/<pid>/stat` shows (clock ticks since boot), when it was known at
    /// spawn without reading `/proc`.
    pub fn start_time(&self) -> Option<u64> {
        self.start_time
    }

    /// The guest serial console (Firecracker's stdout).
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// Firecracker's stderr.
    pub fn stderr(&self) -> &Console {
        &self.stderr
    }

    /// A watch of the exit (None while running).
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit.clone()
    }

    /// How the process ended, if it has.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Waits for the process to end, up to `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Option<ExitInfo> {
        let mut rx = self.exit.clone();
        let ended = tokio::time::timeout(timeout, rx.wait_for(|e| e.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| *v));
        ended.or_else(|| self.exit_info())
    }

    /// Sends `signal` unless the process already ended (through its pidfd: never to a process
    /// that reused the pid).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), ProcessError> {
        if self.exit_info().is_some() {
            return Ok(());
        }
        match pidfd::send_signal(self.pidfd.get_ref(), signal as i32) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => {
                Err(ProcessError::Signal { pid: self.pid, source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)) })
            }
        }
    }

    /// Error for a process that ended before it was ready, with its last output.
    pub fn exited_early(&self, exit: ExitInfo) -> ProcessError {
        let mut stderr = self.stderr.tail(5);
        let out = self.console.tail(5);
        if !out.is_empty() {
            stderr = format!("{stderr}\n{out}");
        }
        ProcessError::ExitedEarly { exit, stderr: stderr.trim().to_string() }
    }

    /// Waits until `path` exists, the process exits (error), or `timeout` passes (`Ok(false)`).
    pub async fn wait_for_path(&self, path: &Path, timeout: Duration) -> Result<bool, ProcessError> {
        let mut backoff = crate::backoff::Backoff::new(timeout);
        loop {
            if path.exists() {
                return Ok(true);
            }
            if let Some(exit) = self.exit_info() {
                return Err(self.exited_early(exit));
            }
            let mut rx = self.exit.clone();
            if !backoff.wait_or(rx.wait_for(|e| e.is_some())).await {
                return Ok(path.exists());
            }
        }
    }
}
