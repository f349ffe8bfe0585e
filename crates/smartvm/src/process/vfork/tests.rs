use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::*;

fn null() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

/// A pipe: (read end, write end).
fn pipe() -> (std::fs::File, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (r.into(), w)
}

fn reap(pid: libc::pid_t) -> nix::sys::wait::WaitStatus {
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap()
}

fn run(program: &str, args: &[&str], setup: ChildSetup) -> std::io::Result<(libc::pid_t, std::fs::File)> {
    let (out, w) = pipe();
    let args: Vec<OsString> = args.iter().map(Into::into).collect();
    let prepared = Prepared::new(Path::new(program), &args, [null(), w, null()], setup)?;
    let pid = spawn(&prepared, &mut ChildStack::new()?)?.pid;
    drop(prepared); // our copy of the write end: the reader sees EOF when the child exits
    Ok((pid, out))
}

fn output(mut out: std::fs::File) -> String {
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn runs_with_arguments_environment_and_umask() {
    let setup = ChildSetup { umask: Some(0o027), ..ChildSetup::default() };
    let (pid, out) = run("/bin/sh", &["-c", "echo \"$0 $PATH\"; umask"], setup).unwrap();
    let text = output(out);
    let path = std::env::var("PATH").unwrap_or_default();
    assert_eq!(text, format!("/bin/sh {path}\n0027\n"));
    assert_eq!(reap(pid), nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0));
}

#[test]
fn a_missing_program_is_the_exec_error() {
    let err = run("/nonexistent/firecracker", &[], ChildSetup::default()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
}

#[test]
fn a_failed_setup_step_is_named() {
    let mount = (CString::new("/nonexistent-source").unwrap(), CString::new("/nonexistent-target").unwrap());
    let setup = ChildSetup { bind_mount: Some(mount), ..ChildSetup::default() };
    let err = run("/bin/true", &[], setup).unwrap_err();
    assert!(err.to_string().contains("bind-mount in a private mount namespace"), "{err}");
    let source = std::error::Error::source(err.get_ref().unwrap()).unwrap().to_string();
    assert!(!source.is_empty());
}

/// `/proc/<pid>/status` field `name` (hex masks) of a running child.
fn status_field(pid: libc::pid_t, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string()
}

#[test]
fn the_child_starts_with_no_blocked_or_ignored_signals_in_a_session_of_its_own() {
    // The test harness ignores SIGPIPE (as every Rust program does), and the spawn blocks all.
    let setup = ChildSetup { new_session: true, ..ChildSetup::default() };
    let (pid, _out) = run("/bin/sleep", &["30"], setup).unwrap();
    assert_eq!(status_field(pid, "SigBlk:"), "0000000000000000");
    // Ignored signals stay ignored across an exec (as with `std::process::Command`), except
    // SIGPIPE, which Rust programs ignore for themselves only.
    let ignored = |pid| u64::from_str_radix(&status_field(pid, "SigIgn:"), 16).unwrap();
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(ignored(std::process::id() as libc::pid_t) & sigpipe, sigpipe);
    assert_eq!(ignored(pid), ignored(std::process::id() as libc::pid_t) & !sigpipe);
    assert_eq!(nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).unwrap().as_raw(), pid);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    reap(pid);
}

#[test]
fn the_child_dies_with_the_thread_that_spawned_it() {
    let parent = std::process::id() as libc::pid_t;
    let spawned = std::thread::spawn(move || {
        let setup = ChildSetup { death_signal: Some(parent), ..ChildSetup::default() };
        run("/bin/sleep", &["30"], setup).unwrap()
    });
    let (pid, _out) = spawned.join().unwrap();
    // The thread is gone: the child gets SIGKILL; wait for it with a deadline.
    let fd = crate::process::pidfd::open(pid, false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !crate::process::pidfd::wait_exited(&fd, Duration::from_millis(100)) {
        assert!(Instant::now() < deadline, "the child outlived the thread that spawned it");
    }
    assert_eq!(
        reap(pid),
        nix::sys::wait::WaitStatus::Signaled(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL, false)
    );
}

#[test]
fn one_stack_serves_many_spawns() {
    let mut stack = ChildStack::new().unwrap();
    for i in 0..20 {
        let (out, w) = pipe();
        let args = [OsString::from("-c"), OsString::from(format!("echo {i}"))];
        let prepared = Prepared::new(Path::new("/bin/sh"), &args, [null(), w, null()], ChildSetup::default()).unwrap();
        let pid = spawn(&prepared, &mut stack).unwrap().pid;
        drop(prepared);
        assert_eq!(output(out), format!("{i}\n"));
        reap(pid);
    }
}

#[test]
fn the_start_time_known_at_spawn_is_the_one_proc_shows() {
    let mut stack = ChildStack::new().unwrap();
    let mut known = 0;
    for _ in 0..20 {
        let args = [OsString::from("5")];
        let prepared = Prepared::new(Path::new("/bin/sleep"), &args, [null(), null(), null()], ChildSetup::default());
        let spawned = spawn(&prepared.unwrap(), &mut stack).unwrap();
        let shown = crate::host::process_start_time(spawned.pid);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(spawned.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        reap(spawned.pid);
        if let Some(t) = spawned.start_time {
            assert_eq!(Some(t), shown, "pid {}", spawned.pid);
            known += 1;
        }
    }
    // Only a spawn that straddles a clock tick (10 ms) leaves it unknown.
    assert!(known >= 15, "known for {known} of 20 spawns");
}

#[test]
fn start_ticks_need_both_readings_in_one_tick() {
    // SAFETY: sysconf has no preconditions.
    let per_tick = 1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert_eq!(start_ticks(5 * per_tick + 1, 5 * per_tick + 99), Some(5));
    assert_eq!(start_ticks(6 * per_tick - 1, 6 * per_tick), None);
}
