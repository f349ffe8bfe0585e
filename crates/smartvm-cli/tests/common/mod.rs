//! Shared helpers of the CLI tests: a private runtime/data dir per test, the built binary.
#![allow(dead_code)]

pub mod agent;
#[path = "../../../smartvm/tests/common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};

pub use skip::skipped;
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_smartvm");

pub struct Env {
    pub dir: tempfile::TempDir,
    /// Extra environment for every command.
    pub extra_env: Vec<(String, String)>,
}

pub fn env() -> Option<Env> {
    let required = std::env::var("SMARTVM_REQUIRE_KVM").is_ok_and(|v| v == "1");
    let have_fc = Path::new(&firecracker_bin()).exists();
    if !Path::new("/dev/kvm").exists() || !have_fc {
        assert!(!required, "SMARTVM_REQUIRE_KVM=1 but /dev/kvm or Firecracker is missing");
        skipped("needs /dev/kvm and Firecracker (set SMARTVM_REQUIRE_KVM=1 to make this a failure)");
        return None;
    }
    let dir = tempfile::Builder::new().prefix("svcli").tempdir_in("/dev/shm").unwrap();
    Some(Env { dir, extra_env: Vec::new() })
}

pub fn firecracker_bin() -> std::ffi::OsString {
    std::env::var_os("SMARTVM_FIRECRACKER_BIN")
        .unwrap_or_else(|| smartvm::SmartVmOptions::default().data_dir.join("bin/v1.12.1/firecracker").into())
}

impl Env {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).env("SMARTVM_RUNTIME_DIR", self.runtime()).env("SMARTVM_DATA_DIR", self.dir.path().join("data"));
        c.env("SMARTVM_FIRECRACKER_BIN", firecracker_bin());
        c.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        c
    }
    /// `smartvm run <args>` in the background, with its stdout as a line iterator.
    pub fn spawn_run(&self, args: &[&str]) -> (Running, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
        use std::io::BufRead;
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let mut child = self.cmd(&full).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        (Running(child), lines)
    }

    pub fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    /// No VM dir left (the shared `.drives` mountpoint is infrastructure, not a VM's).
    pub fn runtime_is_empty(&self) -> bool {
        std::fs::read_dir(self.runtime())
            .map_or(true, |rd| rd.flatten().all(|e| e.file_name().to_string_lossy().starts_with('.')))
    }
}

/// Waits (bounded) for `pid` to exit, through a pidfd; true when it has.
pub fn wait_for_exit(pid: i32, timeout_ms: i32) -> bool {
    // SAFETY: plain syscalls on a pid we own no resources of; the fd is closed below.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        if fd < 0 {
            return true; // already gone (ESRCH)
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ready = libc::poll(&mut pfd, 1, timeout_ms);
        libc::close(fd);
        ready == 1
    }
}

/// `cmd` run through `ip netns exec <ns>`, with the same arguments and environment.
pub fn in_netns(ns: &str, cmd: Command) -> Command {
    let mut wrapped = Command::new("ip");
    wrapped.args(["netns", "exec", ns]).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    wrapped
}

/// A child process killed (and reaped) when dropped, so a failing test leaves no VM running.
pub struct Running(pub std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
