//! The start sequence against a fake Firecracker, on any Linux machine (no KVM needed): the fake
//! records the order of API calls and can answer an error, or die, at call N. For every N the
//! start must fail with a typed error, leave the VM in `Error` and leave nothing behind.
//!
//! The fake is this test binary itself: a small script runs it as
//! `<test exe> --exact fake_firecracker_process` with Firecracker's arguments in
//! `SMARTVM_FAKE_ARGS`; that "test" then serves the API socket until it is killed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use smartvm::config::{DriveConfig, VsockConfig};
use smartvm::vm::VmRuntimeOptions;
use smartvm::{MicroVm, VmConfig, VmState};

const ARGS: &str = "SMARTVM_FAKE_ARGS";
const LOG: &str = "SMARTVM_FAKE_LOG";
const FAIL_AT: &str = "SMARTVM_FAKE_FAIL_AT";
const DIE_AT: &str = "SMARTVM_FAKE_DIE_AT";

static CALLS: AtomicUsize = AtomicUsize::new(0);

fn env_index(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn answer(method: Method, uri: Uri, body: axum::body::Bytes) -> Response {
    let n = CALLS.fetch_add(1, Ordering::SeqCst);
    if let Some(log) = std::env::var_os(LOG) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        writeln!(f, "{method} {}", uri.path()).unwrap();
    }
    if env_index(DIE_AT) == Some(n) {
        std::process::exit(3);
    }
    if env_index(FAIL_AT) == Some(n) {
        let body = serde_json::json!({ "fault_message": format!("fake failure at call {n}") });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    if uri.path() == "/vsock" {
        // Like Firecracker, create the vsock's Unix socket (the unwind must remove it).
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(doc["uds_path"].as_str().unwrap()).unwrap();
        std::mem::forget(listener);
    }
    match (method, uri.path()) {
        (Method::GET, "/version") => axum::Json(serde_json::json!({"firecracker_version": "1.12.1"})).into_response(),
        (Method::GET, "/") => axum::Json(serde_json::json!({
            "app_name": "Firecracker", "id": "fake", "state": "Running", "vmm_version": "1.12.1"
        }))
        .into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Not a test of its own: the fake Firecracker's entry point (a no-op unless started as the fake).
#[test]
fn fake_firecracker_process() {
    let Ok(args) = std::env::var(ARGS) else { return };
    let args: Vec<&str> = args.split(' ').collect();
    let socket = args.windows(2).find(|w| w[0] == "--api-sock").map(|w| PathBuf::from(w[1])).expect("--api-sock");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        axum::serve(listener, axum::Router::new().fallback(answer)).await.unwrap();
    });
}

struct Fake {
    dir: tempfile::TempDir,
    script: PathBuf,
    kernel: PathBuf,
    disk: PathBuf,
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("firecracker");
        let exe = std::env::current_exe().unwrap();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'Firecracker v1.12.1'; exit 0; }}\n\
                 {ARGS}=\"$*\" exec {} --exact fake_firecracker_process --nocapture --test-threads=1 -q\n",
                exe.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let kernel = smartvm::probe::install_probe_kernel(&dir.path().join("k")).unwrap();
        let disk = dir.path().join("disk.img");
        std::fs::write(&disk, vec![0u8; 4096]).unwrap();
        Self { dir, script, kernel, disk }
    }

    fn config(&self, id: &str) -> VmConfig {
        VmConfig::new(&self.kernel)
            .with_id(id)
            .with_machine(1, 16)
            .with_drive(DriveConfig::new("rw", &self.disk))
            .with_vsock(VsockConfig::new(3, self.dir.path().join(format!("{id}.vsock"))))
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Starts a VM against the fake with `env` set, returning its calls and the result.
    async fn start(&self, id: &str, env: &[(&str, String)]) -> (Vec<String>, smartvm::Result<()>, MicroVm) {
        let log = self.dir.path().join(format!("{id}.log"));
        // The fake inherits the environment of the spawning program.
        for (k, v) in env {
            std::env::set_var(k, v);
        }
        std::env::set_var(LOG, &log);
        let mut opts = VmRuntimeOptions::new(&self.script, self.runtime());
        opts.policy.socket_timeout = Duration::from_secs(10);
        let vm = MicroVm::new(&self.config(id), opts).unwrap();
        let result = vm.start().await;
        for (k, _) in env {
            std::env::remove_var(k);
        }
        let calls = std::fs::read_to_string(&log).unwrap_or_default().lines().map(String::from).collect();
        (calls, result, vm)
    }

    fn leftovers(&self, vm: &MicroVm, id: &str) -> Vec<String> {
        let mut left = vec![];
        if vm.runtime_dir().exists() {
            left.push(format!("runtime dir {}", vm.runtime_dir().display()));
        }
        if self.dir.path().join(format!("{id}.vsock")).exists() {
            left.push("vsock socket".into());
        }
        let socket = vm.socket_path().display().to_string();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&socket)
                && smartvm::vm::process_start_time(pid_of(&e.path())).is_some()
            {
                left.push(format!("process {}", e.file_name().to_string_lossy()));
            }
        }
        left
    }
}

fn pid_of(p: &Path) -> i32 {
    p.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).unwrap_or(-1)
}

/// One test drives all cases: the fake reads its failure point from the (process-wide)
/// environment, so the cases must not run concurrently.
#[tokio::test]
async fn every_call_can_fail_or_die_and_nothing_is_left() {
    let fake = Fake::new();
    let (calls, result, vm) = fake.start("ok", &[]).await;
    result.unwrap();
    assert_eq!(vm.state(), VmState::Running);
    assert!(fake.dir.path().join("ok.vsock").exists(), "the fake made the vsock socket");
    assert_eq!(
        calls,
        ["GET /version", "PUT /machine-config", "PUT /boot-source", "PUT /drives/rw", "PUT /vsock", "PUT /actions"],
        "the planned order"
    );
    vm.cleanup().await.unwrap();
    assert!(fake.leftovers(&vm, "ok").is_empty());

    let mut table = vec![];
    for (n, call) in calls.iter().enumerate() {
        for (mode, var) in [("fail", FAIL_AT), ("die", DIE_AT)] {
            let id = format!("{mode}{n}");
            let (_, result, vm) = fake.start(&id, &[(var, n.to_string())]).await;
            let err = result.expect_err("start must fail");
            let root = err.code();
            assert!(err.step().is_some(), "the failed step is named: {err:?}");
            let expected: &[&str] = if mode == "fail" {
                &["API_ERROR"]
            } else {
                &["SOCKET_REQUEST_FAILED", "PROCESS_FAILED", "API_TIMEOUT"]
            };
            assert!(expected.contains(&root.as_str()), "{mode} at call {n} ({}): {root}: {err:?}", call);
            if mode == "fail" {
                assert!(err.fault_message().is_some_and(|m| m.contains("fake failure")), "{err:?}");
            }
            assert_eq!(vm.state(), VmState::Error, "{mode} at call {n}");
            let left = fake.leftovers(&vm, &id);
            table.push(format!("{mode} at {n} ({}): {root}, leftovers {left:?}", call));
            assert!(left.is_empty(), "{mode} at call {n} ({}) left {left:?}", call);
        }
    }
    println!("{}", table.join("\n"));
}
