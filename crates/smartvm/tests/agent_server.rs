#![cfg(feature = "agent")]
//! The host agent's server embedded in a program of its own (as `examples/embed_agent.rs`
//! does): every route of the table is served, and the event stream carries what the VMs
//! publish, each change once and in order.

mod common;

use std::time::Duration;

use smartvm::agent::server::{bind_for, AgentPolicy, AgentServer};
use smartvm::agent::wire::{EventState, VmEvent};
use smartvm::agent::{AgentClient, Route};
use smartvm::api::ApiClient;

/// The `code` of a JSON error body.
fn code_of(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["code"].as_str().map(str::to_string)
}

struct Served {
    socket: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<smartvm::Result<()>>,
}

async fn serve(env: &common::TestEnv) -> Served {
    serve_with(env, AgentPolicy::default(), env.dir.path().join("embedded-agent.sock")).await
}

async fn serve_with(env: &common::TestEnv, policy: AgentPolicy, socket: std::path::PathBuf) -> Served {
    serve_options(env.smartvm.options().clone(), policy, socket).await
}

async fn serve_options(options: smartvm::SmartVmOptions, policy: AgentPolicy, socket: std::path::PathBuf) -> Served {
    let listener = bind_for(&socket, &policy.group).await.unwrap();
    let server = AgentServer::with_policy(options, policy);
    let report = server.adopt().await.unwrap();
    assert!(report.adopted.is_empty() && report.failed.is_empty(), "{report:?}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    Served { socket, stop: Some(stop), task }
}

impl Served {
    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap().unwrap();
    }
}

#[tokio::test]
async fn every_route_of_the_table_is_served() {
    let Some(env) = common::env() else { return };
    let served = serve(&env).await;
    let raw = ApiClient::new(&served.socket);
    for route in Route::ALL.into_iter().filter(|r| *r != Route::Events) {
        let answer = raw.request(route.method(), &route.path("nope"), None).await.unwrap();
        let routed =
            answer.ok || serde_json::from_str::<serde_json::Value>(&answer.body).is_ok_and(|b| b["code"].is_string());
        assert!(routed, "{route:?} answered {} {}", answer.status_code, answer.body);
    }
    // A path outside the table, or a method a path does not take, is answered as such (the
    // check above can fail: those are not routed).
    let unknown = raw.request(smartvm::api::Method::GET, "/v1/nothing", None).await.unwrap();
    assert_eq!((unknown.status_code, code_of(&unknown.body).as_deref()), (404, Some("NO_SUCH_ROUTE")));
    let wrong = raw.request(smartvm::api::Method::PUT, "/v1/vms", None).await.unwrap();
    assert_eq!((wrong.status_code, code_of(&wrong.body).as_deref()), (405, Some("NO_SUCH_ROUTE")));
    served.shut_down().await;
}

#[tokio::test]
async fn the_event_stream_carries_what_the_vms_publish() {
    let Some(env) = common::env() else { return };
    let served = serve(&env).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<VmEvent>();
    let socket = served.socket.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = runtime.block_on(AgentClient::new(&socket).events(|e| tx.send(e).is_ok()));
    });
    let client = AgentClient::new(&served.socket);
    client.info().await.unwrap();
    let vm = client.create(&env.probe_config("streamed", "console=ttyS0 probe.halt")).await.unwrap();
    assert_eq!(vm.state, smartvm::VmState::Running);
    client.pause("streamed").await.unwrap();
    client.resume("streamed").await.unwrap();
    client.stop("streamed", None).await.unwrap();
    client.remove("streamed", false).await.unwrap();
    let mut states = Vec::new();
    while states.last() != Some(&EventState::Removed) {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!(event.id, "streamed");
        if event.step.is_none() {
            states.push(event.state);
        }
    }
    use smartvm::VmState::*;
    let vm = EventState::Vm;
    // The stream opens with each VM's current state: depending on when it connected, the VM's
    // first changes are that head (the same state twice at the seam at most).
    if states.len() > 1 && states[0] == states[1] {
        states.remove(0);
    }
    let all = [vm(Created), vm(Configuring), vm(Running), vm(Paused), vm(Running), vm(Stopped), EventState::Removed];
    assert!(states.len() >= 5 && all.ends_with(&states), "each change once, in order: {states:?}");
    served.shut_down().await;
    assert!(env.smartvm.vm_ids().is_empty());
}

/// A raw request on `socket`: its status, and the body's `code` (every error answer has one).
async fn send(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut request = hyper::Request::builder().method(method).uri(path).header("Host", "localhost");
    if let Some(t) = content_type {
        request = request.header("Content-Type", t);
    }
    let request = request.body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body))).unwrap();
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    (status, code_of(&text).unwrap_or_else(|| format!("(no code) {text}")))
}

const JSON: Option<&str> = Some("application/json");

/// Writes `bytes` as they are on a new connection and returns the first answer (head and body).
async fn raw_exchange(socket: &std::path::Path, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut answer = Vec::new();
    // Until the body is in (it ends in `}`) or the server closes.
    while !answer.ends_with(b"}") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request (method, path, content type, body) and the answer expected (status, code).
type Case = (&'static str, &'static str, Option<&'static str>, Vec<u8>, (u16, &'static str));

#[tokio::test]
async fn hostile_requests_get_coded_4xx_and_create_nothing() {
    let Some(env) = common::env() else { return };
    let served = serve(&env).await;
    let socket = served.socket.clone();
    let kernel = env.kernel.display().to_string();
    let config = |extra: serde_json::Value| {
        let mut c = serde_json::json!({"bootSource": {"kernelImagePath": kernel, "bootArgs": "console=ttyS0 probe.halt"},
                                       "machineConfig": {"vcpuCount": 1, "memSizeMib": 16}});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c.to_string().into_bytes()
    };
    let cases: Vec<Case> = vec![
        ("POST", "/v1/vms", Some("text/plain"), config(serde_json::json!({})), (415, "INVALID_CONFIG")),
        ("POST", "/v1/vms", None, config(serde_json::json!({})), (415, "INVALID_CONFIG")),
        ("POST", "/v1/vms", JSON, b"{not json".to_vec(), (422, "INVALID_CONFIG")),
        ("POST", "/v1/vms", JSON, vec![0xff, 0xfe], (422, "INVALID_CONFIG")),
        ("POST", "/v1/vms", JSON, config(serde_json::json!({"id": "smartvm.sock"})), (422, "INVALID_CONFIG")),
        ("POST", "/v1/vms", JSON, config(serde_json::json!({"id": ".network"})), (422, "INVALID_CONFIG")),
        (
            "POST",
            "/v1/vms",
            JSON,
            config(serde_json::json!({"bootSource": {"kernelImagePath": "/dev/zero"}})),
            (422, "INVALID_CONFIG"),
        ),
        (
            "POST",
            "/v1/vms",
            JSON,
            config(serde_json::json!({"bootSource": {"kernelImagePath": "/"}})),
            (422, "INVALID_CONFIG"),
        ),
        (
            "POST",
            "/v1/vms",
            JSON,
            config(serde_json::json!({"bootSource": {"kernelImagePath": "/proc/self/mem"}})),
            (422, "INVALID_CONFIG"),
        ),
        // Too small a machine for the kernel: refused before Firecracker runs.
        (
            "POST",
            "/v1/vms",
            JSON,
            config(serde_json::json!({"machineConfig": {"vcpuCount": 1, "memSizeMib": 1}})),
            (422, "INVALID_CONFIG"),
        ),
        (
            "POST",
            "/v1/snapshots/restore",
            JSON,
            br#"{"dir": "/nonexistent", "count": 1000}"#.to_vec(),
            (422, "INVALID_CONFIG"),
        ),
        ("POST", "/v1/snapshots/restore", JSON, br#"{"dir": "rel/x"}"#.to_vec(), (422, "INVALID_CONFIG")),
        ("POST", "/v1/snapshots/restore", Some("text/plain"), br#"{"dir": "/x"}"#.to_vec(), (415, "INVALID_CONFIG")),
        ("POST", "/v1/vms/nope/snapshot", JSON, br#"{"dir": "rel"}"#.to_vec(), (422, "INVALID_CONFIG")),
        ("GET", "/v1/vms/%FF%FE", None, Vec::new(), (404, "VM_NOT_FOUND")),
        ("POST", "/v1/vms/nope/stop?timeout_ms=soon", None, Vec::new(), (422, "INVALID_CONFIG")),
        ("DELETE", "/v1/vms/nope?force=maybe", None, Vec::new(), (422, "INVALID_CONFIG")),
    ];
    for (method, path, content_type, body, expected) in cases {
        let (status, code) = send(&socket, method, path, content_type, &body).await;
        assert_eq!((status, code.as_str()), expected, "{method} {path} {}", String::from_utf8_lossy(&body));
    }
    // Bad framing: a chunked body that is no chunk.
    let garbage = b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZZ\r\nnot-a-chunk\r\n\r\n";
    let answer = raw_exchange(&socket, garbage).await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("\"code\":\"INVALID_CONFIG\""), "{answer}");
    let client = AgentClient::new(&socket);
    assert!(client.list().await.unwrap().is_empty(), "nothing was created");
    // Console input: all of it is written, or 413 past a pipe's worth.
    client.create(&env.probe_config("typist", "console=ttyS0 probe.count=2000")).await.unwrap();
    let (status, code) = send(&socket, "POST", "/v1/vms/typist/console", None, &vec![b'x'; 1 << 20]).await;
    assert_eq!((status, code.as_str()), (413, "INVALID_CONFIG"));
    let (status, _) = send(&socket, "POST", "/v1/vms/typist/console", None, &vec![b'y'; 4096]).await;
    assert_eq!(status, 204, "a page of input is taken whole");
    client.remove("typist", true).await.unwrap();
    served.shut_down().await;
}

/// Runs `f` on a thread of its own whose credentials are `nobody`/`nogroup` (set per thread, by
/// raw syscalls: the rest of the test stays root), so the agent sees another user connect.
fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: raw credential syscalls on this thread only; no pointers but a null list.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()), 0);
            assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
        }
        f()
    })
    .join()
    .unwrap()
}

/// A request as `nobody`: its status and code.
async fn send_as_nobody(
    socket: &std::path::Path,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
) -> (u16, String) {
    let socket = socket.to_path_buf();
    tokio::task::spawn_blocking(move || {
        as_nobody(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(send(&socket, method, path, JSON, &body))
        })
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_group_member_names_no_host_path_outside_the_allowed_dirs() {
    let Some(env) = common::env() else { return };
    let Ok(Some(group)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(65534)) else {
        common::skipped("no group with gid 65534");
        return;
    };
    // The socket where `nobody` reaches it; the operator allows one directory of images.
    let public = tempfile::Builder::new().prefix("svagent").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(public.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let images = public.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::copy(&env.kernel, images.join("vmlinux")).unwrap();
    let policy =
        AgentPolicy { group: group.name.clone(), allowed_paths: vec![images.clone()], ..AgentPolicy::default() };
    let served = serve_with(&env, policy, public.path().join("agent.sock")).await;
    let socket = served.socket.clone();
    let allowed_kernel = images.join("vmlinux").display().to_string();
    let pwned = public.path().join("pwned");
    let with = |extra: serde_json::Value| {
        let mut c = serde_json::json!({"bootSource": {"kernelImagePath": allowed_kernel, "bootArgs": "console=ttyS0 probe.count=100"},
                                       "machineConfig": {"vcpuCount": 1, "memSizeMib": 16}});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c.to_string().into_bytes()
    };
    let refused = [
        with(serde_json::json!({"logger": {"logPath": pwned.join("log")}})),
        with(serde_json::json!({"metrics": {"metricsPath": "/etc/smartvm-pwned"}})),
        with(
            serde_json::json!({"drives": [{"driveId": "d", "pathOnHost": "/etc/shadow", "isRootDevice": false, "isReadOnly": true}]}),
        ),
        with(serde_json::json!({"bootSource": {"kernelImagePath": "/etc/shadow"}})),
    ];
    for body in refused {
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(send_as_nobody(&socket, "POST", "/v1/vms", body).await, (403, "PERMISSION_DENIED".into()), "{text}");
    }
    let restore = br#"{"dir": "/var/lib/smartvm"}"#.to_vec();
    assert_eq!(
        send_as_nobody(&socket, "POST", "/v1/snapshots/restore", restore).await,
        (403, "PERMISSION_DENIED".into())
    );
    // Pools hold VMs for as long as they exist: only the owner makes or removes them.
    let pool = format!(
        r#"{{"name": "members", "size": 1, "config": {}}}"#,
        String::from_utf8_lossy(&with(serde_json::json!({})))
    );
    assert_eq!(
        send_as_nobody(&socket, "POST", "/v1/pools", pool.into_bytes()).await,
        (403, "PERMISSION_DENIED".into())
    );
    assert!(!pwned.exists() && !std::path::Path::new("/etc/smartvm-pwned").exists(), "nothing was written");
    let client = AgentClient::new(&socket);
    assert!(client.list().await.unwrap().is_empty(), "nothing was created");
    assert!(client.pools().await.unwrap().is_empty(), "no pool was created");
    // Under the allowed directory a member boots a VM.
    let (status, _) = send_as_nobody(&socket, "POST", "/v1/vms", with(serde_json::json!({"id": "members"}))).await;
    assert_eq!(status, 201);
    client.remove("members", true).await.unwrap();
    served.shut_down().await;
}

/// A small deterministic generator (xorshift64): the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that have broken parsers and validators before.
fn hostile_values() -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        json!(null),
        json!(-1),
        json!(0),
        json!(u64::MAX),
        json!(1e308),
        json!(""),
        json!("\u{0}"),
        json!("/dev/zero"),
        json!("/"),
        json!("../../etc/shadow"),
        json!([]),
        json!({}),
        json!([[[[[]]]]]),
        json!("x".repeat(5000)),
        json!(true),
        json!("smartvm.sock"),
    ]
}

/// `value` with one field (at any depth, found by its JSON pointer) replaced by a hostile value.
fn poison(value: &mut serde_json::Value, rng: &mut Rng) {
    fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
            serde_json::Value::Array(a) => {
                a.iter().enumerate().for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out))
            }
            _ => {}
        }
        out.push(at);
    }
    let mut all = Vec::new();
    pointers(value, String::new(), &mut all);
    let values = hostile_values();
    let pick = values[rng.below(values.len())].clone();
    if let Some(slot) = value.pointer_mut(&all[rng.below(all.len())]) {
        *slot = pick;
    }
}

/// One mutation of `seed`: a poisoned field, flipped bytes, or a truncation.
fn mutate(seed: &str, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    match rng.below(3) {
        0 => {
            let mut value: serde_json::Value = serde_json::from_str(seed).unwrap();
            poison(&mut value, rng);
            bytes = value.to_string().into_bytes();
        }
        1 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
        }
        _ => bytes.truncate(rng.below(bytes.len())),
    }
    bytes
}

#[tokio::test]
async fn mutated_bodies_get_coded_answers_and_the_agent_stays_up() {
    let Some(env) = common::env() else { return };
    // Base-image requests (a mutation may name any preset) go to a port nothing listens on:
    // refused at once, never the network.
    let closed = "http://127.0.0.1:9".to_string();
    let mut options = env.smartvm.options().clone();
    options.mirrors =
        smartvm::images::Mirrors { github_api: closed.clone(), github: closed.clone(), ci_artifacts: closed };
    let socket = env.dir.path().join("mutations.sock");
    let served = serve_options(options, AgentPolicy::default(), socket).await;
    let client = AgentClient::new(&served.socket);
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/agent");
    let mut seeds: Vec<(String, String)> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 4, "the corpus is in the repo");
    let kernel = env.kernel.display().to_string();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    for round in 0..400 {
        let (name, seed) = &seeds[round % seeds.len()];
        let seed = seed.replace("@KERNEL@", &kernel);
        let body = mutate(&seed, &mut rng);
        let (status, code) = send(&served.socket, "POST", "/v1/vms", JSON, &body).await;
        let shown = String::from_utf8_lossy(&body).chars().take(300).collect::<String>();
        // 201, a refusal, or (a base image) the upstream that cannot be reached from here.
        let upstream = status == 502 && code.ends_with("_FAILED");
        assert!(status == 201 || (400..500).contains(&status) || upstream, "{name} #{round}: {status} {code}: {shown}");
        assert!(status == 201 || !code.starts_with("(no code)"), "{name} #{round}: {status} {code}: {shown}");
        for vm in client.list().await.unwrap() {
            client.remove(&vm.id, true).await.unwrap();
        }
    }
    client.info().await.unwrap();
    served.shut_down().await;
}
