//! The host agent for CLI tests: `smartvm serve` on a socket in the test's dir, and the
//! commands that talk to it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use smartvm::agent::AgentClient;

use super::{Env, Running};

/// An agent on a socket in the test's dir, and the environment its clients need. Its VMs are
/// detached (they outlive it): when the test ends, however it ends, they are killed too.
pub struct Agent {
    pub process: Running,
    pub socket: PathBuf,
    pub runtime: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let runtime = self.runtime.display().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmd =
                String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).into_owned();
            let pid = e.file_name().to_string_lossy().parse::<i32>();
            if let (true, Ok(pid)) = (cmd.contains(&runtime) && cmd.contains("firecracker"), pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Agent {
    pub fn start(env: &mut Env) -> Agent {
        let dir = env.dir.path().join("agent");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let socket = dir.join("smartvm.sock");
        env.extra_env.push(("SMARTVM_AGENT_SOCKET".into(), socket.display().to_string()));
        let process = Running(env.cmd(&["serve"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        wait_until_answers(&socket);
        Agent { process, socket, runtime: env.runtime() }
    }
}

pub fn run(env: &Env, args: &[&str]) -> (Option<i32>, String, String) {
    let out = env.cmd(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// `run -d --id <id> --boot-args <args>`, which must succeed.
pub fn detach(env: &Env, id: &str, boot_args: &str) {
    let (code, _, err) = run(env, &["run", "-d", "--id", id, "--boot-args", boot_args]);
    assert_eq!(code, Some(0), "{err}");
}

/// `rm -f` of each of `ids`, which must succeed.
pub fn remove_all<S: AsRef<str>>(env: &Env, ids: impl IntoIterator<Item = S>) {
    for id in ids {
        let (code, _, err) = run(env, &["rm", "-f", id.as_ref()]);
        assert_eq!(code, Some(0), "{}: {err}", id.as_ref());
    }
}

/// Waits (at most 10 s) until an agent answers at `socket`.
pub fn wait_until_answers(socket: &std::path::Path) {
    let client = AgentClient::new(socket);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime.block_on(client.info()).is_err() {
        assert!(Instant::now() < deadline, "the agent answers within 10 s");
        std::thread::yield_now();
    }
}
