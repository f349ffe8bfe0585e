//! Starting `smartvm-guest` on a Unix socket for a test, and waiting for it with a deadline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smartvm::guest::{GuestAddress, GuestClient};

pub const AGENT: &str = env!("CARGO_BIN_EXE_smartvm-guest");

/// A running agent, killed when dropped.
pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// `smartvm-guest --listen unix:<dir>/agent.sock` plus `extra`.
    pub async fn start(extra: &[&str]) -> Agent {
        Agent::start_with(Command::new(AGENT), extra).await
    }

    /// The same through `command` (for example `unshare … smartvm-guest`), which must end in
    /// the agent's path.
    pub async fn start_with(mut command: Command, extra: &[&str]) -> Agent {
        // Not under /tmp: an agent that is PID 1 mounts its own /tmp and /run.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let socket = dir.path().join("agent.sock");
        let listen = format!("unix:{}", socket.display());
        let (flags, workload) = match extra.iter().position(|a| *a == "--") {
            Some(at) => extra.split_at(at),
            None => (extra, &[][..]),
        };
        command.args(["--listen", &listen]).args(flags).args(workload).stdout(Stdio::piped());
        let child = command.spawn().unwrap();
        let agent = Agent { child, socket, dir };
        agent.wait_ready().await;
        agent
    }

    pub fn client(&self) -> GuestClient {
        GuestClient::new(GuestAddress::Unix(self.socket.clone()))
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() && self.client().hello().await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "the agent did not answer hello within 20 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The agent's peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM:")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}
