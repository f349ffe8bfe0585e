//! The agent as the guest's init (PID 1): API filesystems, loopback, Ctrl-Alt-Del, the workload,
//! orphans, and a clean power-off that reports the workload's exit status on the console first.

use std::process::{Command, ExitCode};
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use smartvm_guest_protocol::{ExitStatus, EXIT_REPORT};
use tokio::signal::unix::{signal, SignalKind};

use crate::agent::Agent;

/// How long the workload has to end after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Mounts /proc, /sys, /dev, /dev/pts, /run and /tmp; what is mounted already stays.
pub fn mount_api_filesystems() {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounts: [(&str, &str, MsFlags, Option<&str>); 6] = [
        ("proc", "/proc", nodev, None),
        ("sysfs", "/sys", nodev, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        ("devpts", "/dev/pts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("gid=5,mode=0620,ptmxmode=0666")),
        ("tmpfs", "/run", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755")),
        ("tmpfs", "/tmp", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777")),
    ];
    for (fstype, target, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        match mount(Some(fstype), target, Some(fstype), flags, data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => eprintln!("smartvm-guest: mounting {fstype} on {target}: {e}"),
        }
    }
}

/// What PID 1 does once the runtime runs: Ctrl-Alt-Del becomes SIGINT, `lo` comes up, the
/// `ip=` network is configured if the kernel did not, the hostname `ip=` names is set (else
/// `localhost` when the kernel gave none). `ip` overrides the kernel's `ip=`.
pub fn prepare(ip: Option<&str>) {
    match nix::sys::reboot::set_cad_enabled(false) {
        // EINVAL: PID 1 of a container's pid namespace, where Ctrl-Alt-Del is not ours anyway.
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => eprintln!("smartvm-guest: cannot take over Ctrl-Alt-Del: {e}"),
    }
    if let Err(e) = crate::net::loopback_up() {
        eprintln!("smartvm-guest: cannot bring up lo: {e}");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let config = match ip {
        Some(spec) => crate::net::parse(spec),
        None => crate::net::from_cmdline(&cmdline),
    };
    if let Some(config) = &config {
        if let Err(e) = crate::net::apply(config) {
            eprintln!("smartvm-guest: cannot configure {}: {e}", config.device);
        }
    }
    let unnamed = nix::unistd::gethostname().is_ok_and(|name| name.is_empty() || name == "(none)");
    match config.and_then(|c| c.hostname) {
        Some(name) => {
            let _ = nix::unistd::sethostname(name);
        }
        None if unnamed => {
            let _ = nix::unistd::sethostname("localhost");
        }
        None => {}
    }
}

/// Waits for the end: the workload's exit, a `shutdown` request, or SIGTERM/SIGINT (which the
/// workload gets first). Returns the exit status to report.
pub async fn run_until_end(agent: &Agent, workload: &[String]) -> i32 {
    let (Ok(mut term), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("smartvm-guest: cannot watch SIGTERM/SIGINT");
        return 1;
    };
    let Some(program) = workload.first() else {
        tokio::select! {
            _ = agent.shutdown.notified() => {}
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        return 0;
    };
    let mut command = Command::new(program);
    command.args(&workload[1..]);
    let (child, mut exit) = match agent.reaper.spawn(&mut command) {
        Ok(spawned) => spawned,
        Err(e) => {
            eprintln!("smartvm-guest: cannot run the workload {program:?}: {e}");
            return 127;
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    tokio::select! {
        status = &mut exit => return code_of(status),
        _ = agent.shutdown.notified() => {}
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
    let _ = kill(pid, Signal::SIGTERM);
    if let Ok(status) = tokio::time::timeout(STOP_GRACE, &mut exit).await {
        return code_of(status);
    }
    let _ = kill(pid, Signal::SIGKILL);
    code_of(exit.await)
}

fn code_of(status: Result<ExitStatus, tokio::sync::oneshot::error::RecvError>) -> i32 {
    status.map_or(1, ExitStatus::shell_code)
}

/// Ends the agent: as a service, exits with `status`; as PID 1, reports it on the console, ends
/// every process, syncs the disks and powers off.
pub fn finish(pid1: bool, status: i32) -> ExitCode {
    if !pid1 {
        return ExitCode::from(status.clamp(0, 255) as u8);
    }
    println!("{EXIT_REPORT}{status}");
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    // Orphans and sessions get a moment to end; waiting reaps them (ECHILD: none are left).
    while std::time::Instant::now() < deadline {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => break,
            Ok(nix::sys::wait::WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            _ => {}
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Without ACPI power-off, a reset is what ends a Firecracker VM.
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    ExitCode::from(status.clamp(0, 255) as u8)
}
