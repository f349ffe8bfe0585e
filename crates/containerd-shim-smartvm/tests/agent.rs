//! The guest agent's path through the shim, against a private containerd 1.6: the task's own
//! process run by the agent as init (its output on stdout, its status as ctr's), `ctr task
//! exec` in a running task, a task without an agent refusing exec with the reason, and a
//! kernel task's root drive carrying the agent. The probe guest stands in for Linux (its agent
//! runs built-in programs: `echo`, `exit`); a real kernel is `linux_guest` in the smartvm crate.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{usable, Containerd, IMAGE};

const RUNTIME: &str = "io.containerd.smartvm.v2";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ctr run [flags] --runtime smartvm IMAGE id args…` of the probe with `annotations`.
fn run(containerd: &Containerd, flags: &[&str], annotations: &[&str], id: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["run"];
    all.extend_from_slice(flags);
    all.extend_from_slice(&["--snapshotter", "native", "--runtime", RUNTIME]);
    for annotation in annotations {
        all.extend_from_slice(&["--annotation", annotation]);
    }
    all.extend_from_slice(&[IMAGE, id]);
    all.extend_from_slice(args);
    containerd.ctr(&all)
}

const PROBE: &str = "io.smartvm.guest=probe";
const AGENT_INIT: &str = "io.smartvm.init=agent";

/// What the runtime dir holds that is not infrastructure (VM dirs), and the vsock sockets.
fn leftovers(containerd: &Containerd) -> Vec<PathBuf> {
    let run = containerd.runtime_dir();
    let listed = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    };
    let mut left: Vec<PathBuf> =
        listed(&run).into_iter().filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')).collect();
    left.extend(listed(&run.join(".shim-vsock")));
    left
}

fn wait_stopped(containerd: &Containerd, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ls = text(&containerd.ctr(&["task", "ls"]).stdout);
        if ls.lines().any(|l| l.starts_with(id) && l.contains("STOPPED")) {
            return;
        }
        assert!(Instant::now() < deadline, "task {id} never stopped: {ls}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn remove(containerd: &Containerd, id: &str) {
    let _ = containerd.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    wait_stopped(containerd, id);
    assert!(containerd.ctr(&["task", "delete", id]).status.success());
    assert!(containerd.ctr(&["container", "rm", id]).status.success());
}

#[test]
fn with_the_agent_as_init_the_task_is_its_oci_process() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let out = run(&containerd, &[], &[PROBE, AGENT_INIT], "a1", &["echo", "hello", "from", "the", "process"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        "hello from the process\n",
        "only the process's output: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    assert_eq!(out.status.code(), Some(0));
    let out = run(&containerd, &[], &[PROBE, AGENT_INIT], "a2", &["exit", "5"]);
    assert_eq!(out.status.code(), Some(5), "the process's status is ctr's: {}", text(&out.stderr));
    let out = run(&containerd, &[], &[PROBE, AGENT_INIT], "a3", &["no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("no-such-program: not a probe program"), "its stderr is ctr's");
    for id in ["a1", "a2", "a3"] {
        assert!(containerd.ctr(&["container", "rm", id]).status.success());
    }
    assert!(leftovers(&containerd).is_empty(), "left: {:?}", leftovers(&containerd));
    assert!(containerd.firecracker_pids().is_empty(), "each VM ended with its process");
}

#[test]
fn ctr_task_exec_runs_processes_in_a_running_task_through_its_agent() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    // Console mode, with the probe's agent serving as the workload.
    let port = format!("probe.vsock={}", smartvm::guest::protocol::DEFAULT_VSOCK_PORT);
    let started = run(&containerd, &["-d"], &[PROBE], "x1", &[&port]);
    assert!(started.status.success(), "{}\n{}", text(&started.stderr), containerd.log());
    let exec = |exec_id: &str, args: &[&str]| {
        let mut all = vec!["task", "exec", "--exec-id", exec_id, "x1"];
        all.extend_from_slice(args);
        containerd.ctr(&all)
    };
    // The agent may still be coming up: the first exec waits for it (within its deadline).
    let hello = exec("e1", &["echo", "hi", "there"]);
    assert_eq!(text(&hello.stdout), "hi there\n", "{}\n{}", text(&hello.stderr), containerd.log());
    assert_eq!(hello.status.code(), Some(0));
    assert_eq!(exec("e2", &["exit", "4"]).status.code(), Some(4), "the exec's status is ctr's");
    let unknown = exec("e3", &["uname"]);
    assert_eq!(unknown.status.code(), Some(127));
    assert!(text(&unknown.stderr).contains("uname: not a probe program"), "{}", text(&unknown.stderr));
    let ls = text(&containerd.ctr(&["task", "ls"]).stdout);
    assert!(ls.lines().any(|l| l.starts_with("x1") && l.contains("RUNNING")), "execs leave the task running: {ls}");
    remove(&containerd, "x1");
    assert!(leftovers(&containerd).is_empty(), "left: {:?}", leftovers(&containerd));
}

#[test]
fn a_task_without_an_agent_refuses_exec_with_the_reason() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let started = run(&containerd, &["-d"], &[PROBE], "n1", &["probe.count=100000"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let out = containerd.ctr(&["task", "exec", "--exec-id", "e1", "n1", "echo", "hi"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no guest agent answered"), "{}", text(&out.stderr));
    let ls = text(&containerd.ctr(&["task", "ls"]).stdout);
    assert!(ls.lines().any(|l| l.starts_with("n1") && l.contains("RUNNING")), "the task runs on: {ls}");
    remove(&containerd, "n1");
    assert!(leftovers(&containerd).is_empty());
}

/// A tiny static executable (what `inject` accepts as an agent), compiled by the test.
fn static_binary(dir: &Path) -> PathBuf {
    let source = dir.join("tiny.rs");
    std::fs::write(&source, "fn main() {}\n").unwrap();
    let out = dir.join("tiny");
    let status = Command::new("rustc")
        .args(["-C", "target-feature=+crt-static", "-C", "opt-level=1", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[test]
fn a_kernel_task_s_root_drive_carries_the_guest_agent_as_init() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image_as("default", IMAGE, "overlayfs");
    let data = containerd.dir.path().join("data");
    std::fs::create_dir_all(data.join("bin")).unwrap();
    let agent = data.join("bin/smartvm-guest");
    std::fs::copy(static_binary(containerd.dir.path()), &agent).unwrap();
    // Any file inside the allowed dirs passes Create; it cannot boot (a Linux kernel could not
    // boot here either), so Start fails — after the root drive was made.
    std::fs::create_dir_all(data.join("kernels")).unwrap();
    let kernel = data.join("kernels/not-a-kernel");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let annotation = format!("io.smartvm.kernel={}", kernel.display());
    let args =
        ["run", "--snapshotter", "overlayfs", "--runtime", RUNTIME, "--annotation", &annotation, IMAGE, "k1", "/app"];
    let out = containerd.ctr(&args);
    assert!(!out.status.success(), "a file that is no kernel cannot start");
    let cache = data.join("shim-rootfs");
    let images: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ext4"))
        .collect();
    assert_eq!(images.len(), 1, "{images:?}\n{}", text(&out.stderr));
    assert!(images[0].file_name().unwrap().to_string_lossy().contains("-agent-"), "{images:?}");
    let stat = Command::new("debugfs").args(["-R", "stat /sbin/smartvm-guest"]).arg(&images[0]).output().unwrap();
    let stat = text(&stat.stdout);
    assert!(stat.contains("Type: regular") && stat.contains("Mode:  0755"), "{stat}");
    let cat = Command::new("debugfs").args(["-R", "cat /hello.txt"]).arg(&images[0]).output().unwrap();
    assert_eq!(text(&cat.stdout), "hello\n", "the image's own files are there too");
    let _ = containerd.ctr(&["task", "delete", "k1"]);
    assert!(containerd.ctr(&["container", "rm", "k1"]).status.success());
    assert!(leftovers(&containerd).is_empty(), "left: {:?}", leftovers(&containerd));
}

#[test]
fn runtime_options_from_containerd_set_every_task_s_defaults() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let config = containerd.dir.path().join("smartvm-shim.toml");
    std::fs::write(&config, "guest = \"probe\"\ninit = \"agent\"\nmem_mib = 64\n").unwrap();
    let path = config.to_str().unwrap();
    let flags = ["--runtime-config-path", path];
    let out = run(&containerd, &flags, &[], "o1", &["echo", "configured", "by", "options"]);
    assert_eq!(text(&out.stdout), "configured by options\n", "{}\n{}", text(&out.stderr), containerd.log());
    // A file another user could have written is not trusted: the task is refused, nothing made.
    std::fs::write(&config, "guest = \"probe\"\n").unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = run(&containerd, &flags, &[], "o2", &["echo", "no"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("runtime config"), "{}", text(&out.stderr));
    for id in ["o1", "o2"] {
        let _ = containerd.ctr(&["container", "rm", id]);
    }
    assert!(leftovers(&containerd).is_empty(), "left: {:?}", leftovers(&containerd));
}
