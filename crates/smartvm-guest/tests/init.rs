//! The agent as PID 1 of a pid + mount + network + UTS namespace the test creates (never the
//! host's), and as a service with a workload: mounts, loopback, orphan reaping, the workload's
//! exit status, SIGTERM forwarding, shutdown.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agent, AGENT};

fn namespaced() -> Command {
    let mut command = Command::new("unshare");
    command.args(["--pid", "--fork", "--mount", "--net", "--uts", "--kill-child", AGENT]);
    command
}

async fn shell(agent: &Agent, script: &str) -> (String, bool) {
    let out = agent.client().output(&["sh", "-c", script]).await.unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success())
}

/// Waits for the process to end and returns what it printed.
fn ended(agent: &mut Agent, limit: Duration) -> (String, std::process::ExitStatus) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent did not end within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    agent.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (out, status)
}

#[tokio::test]
async fn as_pid_1_it_mounts_brings_up_lo_reaps_orphans_and_powers_off() {
    let mut agent = Agent::start_with(namespaced(), &[]).await;
    let health = agent.client().health().await.unwrap();
    assert!(health.init, "the agent knows it is PID 1");
    let (mounts, _) = shell(&agent, "cat /proc/mounts").await;
    for expected in ["devpts /dev/pts", "tmpfs /run", "tmpfs /tmp", "sysfs /sys"] {
        assert!(mounts.contains(expected), "{expected} missing from {mounts}");
    }
    let (flags, _) = shell(&agent, "cat /sys/class/net/lo/flags").await;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up in the namespace");

    // The shell exits at once; its background child is re-parented to PID 1, the agent.
    let (orphan, _) = shell(&agent, "sleep 0.3 >/dev/null 2>&1 & echo $!").await;
    let orphan = orphan.trim().to_owned();
    let (stat, _) = shell(&agent, &format!("cat /proc/{orphan}/stat")).await;
    assert_eq!(stat.split_whitespace().nth(3), Some("1"), "the orphan's parent is PID 1: {stat}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, present) = shell(&agent, &format!("test -e /proc/{orphan}")).await;
        if !present {
            break;
        }
        assert!(Instant::now() < deadline, "the orphan {orphan} was never reaped (a zombie stays)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    agent.client().shutdown().await.unwrap();
    let (out, _) = ended(&mut agent, Duration::from_secs(20));
    assert!(out.contains("smartvm-guest exit=0"), "the exit report comes before power-off: {out:?}");
}

/// A network namespace of the test's own with one end of a veth pair in it (removed on drop).
struct TestNetns(String);

impl TestNetns {
    fn create() -> TestNetns {
        let name = format!("svg-{}", std::process::id());
        let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
        ip(&["netns", "add", &name]);
        let ns = TestNetns(name);
        ip(&["-n", &ns.0, "link", "add", "guest0", "type", "veth", "peer", "name", "host0"]);
        ns
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test]
async fn as_pid_1_it_configures_the_ip_argument_s_interface_and_hostname() {
    let ns = TestNetns::create();
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &ns.0, "unshare", "--pid", "--fork", "--mount", "--uts", "--kill-child", AGENT]);
    let spec = "10.77.0.2::10.77.0.1:255.255.255.0:guest-one:guest0:off";
    let mut agent = Agent::start_with(command, &["--ip", spec]).await;
    let (hostname, _) = shell(&agent, "cat /proc/sys/kernel/hostname").await;
    assert_eq!(hostname.trim(), "guest-one");
    let (route, _) = shell(&agent, "cat /proc/net/route").await;
    // The default route (destination 0) through 10.77.0.1 (little-endian hex 01004D0A) on guest0.
    assert!(route.lines().any(|l| l.starts_with("guest0\t00000000\t01004D0A")), "{route}");
    let (flags, _) = shell(&agent, "cat /sys/class/net/guest0/flags").await;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "guest0 is up");
    let (addrs, _) = shell(&agent, "cat /proc/net/fib_trie").await;
    assert!(addrs.contains("10.77.0.2"), "{addrs}");
    agent.client().shutdown().await.unwrap();
    ended(&mut agent, Duration::from_secs(20));
}

#[tokio::test]
async fn as_pid_1_the_workload_s_exit_status_is_reported() {
    let workload = ["--", "sh", "-c", "while [ ! -e /run/go ]; do sleep 0.02; done; exit 3"];
    let mut agent = Agent::start_with(namespaced(), &workload).await;
    let (_, touched) = shell(&agent, "touch /run/go").await;
    assert!(touched);
    let (out, _) = ended(&mut agent, Duration::from_secs(20));
    assert!(out.contains("smartvm-guest exit=3"), "{out:?}");
}

#[tokio::test]
async fn as_a_service_it_exits_with_the_workload_and_forwards_sigterm() {
    // The workload says when its trap is set: a SIGTERM before that would end `sh` with 143.
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("trapped");
    let script = format!("trap 'exit 9' TERM; touch {}; while :; do sleep 0.02; done", ready.display());
    let mut agent = Agent::start(&["--", "sh", "-c", &script]).await;
    common::wait_until(Duration::from_secs(10), "the workload set its trap", || ready.exists()).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let (_, status) = ended(&mut agent, Duration::from_secs(20));
    assert_eq!(status.code(), Some(9), "the workload's status is the agent's");
}
