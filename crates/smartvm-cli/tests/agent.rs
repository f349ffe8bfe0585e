//! The host agent (`smartvm serve`) and the verbs that use it, against the real binary and
//! Firecracker: detach → ps → logs → logs -f → stop → rm leaves nothing; 404/409/422 create
//! nothing; a non-permitted peer is refused; every route is served and documented.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::agent::{detach, remove_all, run, wait_until_answers, Agent};
use common::{env, Env, Running};
use smartvm::agent::AgentClient;

#[test]
fn detach_ps_logs_follow_stop_rm_leaves_nothing() {
    let Some(mut env) = env() else { return };
    let _agent = Agent::start(&mut env);
    let (code, id, err) = run(&env, &["run", "-d", "--id", "det1", "--boot-args", "console=ttyS0 probe.count=20"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(id.trim(), "det1");
    let (code, ps, _) = run(&env, &["ps"]);
    assert_eq!(code, Some(0));
    assert!(ps.lines().any(|l| l.starts_with("det1") && l.contains("running")), "{ps}");
    let (_, json, _) = run(&env, &["ps", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed[0]["id"], "det1");
    assert!(listed[0]["pid"].as_i64().is_some_and(|p| p > 0));

    // logs -f: the lines kept so far, then new ones as the guest prints them.
    let mut follow = Running(env.cmd(&["logs", "-f", "det1"]).stdout(Stdio::piped()).spawn().unwrap());
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let counts: Vec<u64> = lines
        .by_ref()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("smartvm-probe count n=").and_then(|n| n.parse().ok()))
        .take(5)
        .collect();
    assert_eq!(counts.len(), 5, "logs -f follows the counting guest");
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "no gaps or repeats: {counts:?}");
    let (code, logs, _) = run(&env, &["logs", "det1"]);
    assert_eq!(code, Some(0));
    assert!(logs.starts_with("smartvm-probe boot"), "{logs}");

    let (code, _, err) = run(&env, &["rm", "det1"]);
    assert_eq!(code, Some(1), "a running VM is not removed without -f");
    assert!(err.contains("INVALID_STATE"), "{err}");
    let (code, _, err) = run(&env, &["stop", "--timeout", "1", "det1"]);
    assert_eq!(code, Some(0), "{err}");
    // The console ended with the VM: the follower ends too.
    assert!(common::wait_for_exit(follow.id() as i32, 10_000), "logs -f ends with the VM");
    assert_eq!(follow.wait().unwrap().code(), Some(0));
    let (_, inspect, _) = run(&env, &["inspect", "det1"]);
    let vm: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(vm["state"], "stopped");
    let console_file = vm["consoleFile"].as_str().expect("inspect names the console file");
    assert!(std::fs::read_to_string(console_file).unwrap().starts_with("smartvm-probe boot"));
    let (code, _, err) = run(&env, &["rm", "det1"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, ps, _) = run(&env, &["ps", "-a", "--json"]);
    assert_eq!(ps.trim(), "[]");
    assert!(env.runtime_is_empty(), "nothing left in the runtime dir");
}

#[test]
fn refused_requests_create_nothing_and_say_why() {
    let Some(mut env) = env() else { return };
    let agent = Agent::start(&mut env);
    let (code, _, err) = run(&env, &["logs", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("error[VM_NOT_FOUND]"), "{err}");
    for verb in ["stop", "pause", "resume", "inspect", "rm"] {
        let (code, _, err) = run(&env, &[verb, "nope"]);
        assert_eq!(code, Some(1), "{verb}");
        assert!(err.contains("VM_NOT_FOUND"), "{verb}: {err}");
    }
    // 422 with every problem, each with its field.
    let client = AgentClient::new(&agent.socket);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bad = smartvm::VmConfig::new("/nope").with_id("bad").with_machine(99, 16);
    let err = runtime.block_on(client.create(&bad)).unwrap_err();
    let smartvm::SmartVmError::InvalidConfig(problems) = &err else { panic!("{err}") };
    assert!(problems.has_field("machineConfig.vcpuCount") && problems.has_field("bootSource.kernelImagePath"));
    let raw = smartvm::api::ApiClient::new(&agent.socket);
    let answer = runtime.block_on(raw.request(smartvm::api::Method::POST, "/v1/vms", Some(b"{\"x\": 1}".to_vec())));
    assert_eq!(answer.unwrap().status_code, 422);
    assert!(runtime.block_on(client.list()).unwrap().is_empty(), "nothing was created");
    assert!(env.runtime_is_empty());

    // Every route is served (an unknown id answers with an error body, not a missing route; the
    // event stream has its own test) and the served document is the checked-in one.
    for route in smartvm::agent::Route::ALL.into_iter().filter(|r| *r != smartvm::agent::Route::Events) {
        let answer = runtime.block_on(raw.request(route.method(), &route.path("nope"), None)).unwrap();
        assert_ne!(answer.status_code, 405, "{route:?}");
        if answer.status_code == 404 {
            let unknown = answer.body.contains("VM_NOT_FOUND") || answer.body.contains("POOL_NOT_FOUND");
            assert!(unknown, "{route:?} is routed: {}", answer.body);
        }
    }
    let doc = runtime.block_on(raw.get("/openapi.json")).unwrap();
    assert_eq!(doc.body, smartvm::agent::wire::OPENAPI);
}

#[test]
fn without_an_agent_run_detach_says_how_to_start_one() {
    let Some(mut env) = env() else { return };
    let socket = env.dir.path().join("none.sock");
    env.extra_env.push(("SMARTVM_AGENT_SOCKET".into(), socket.display().to_string()));
    let (code, _, err) = run(&env, &["run", "-d"]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("AGENT_UNAVAILABLE") && err.contains("smartvm serve"), "{err}");
    assert!(!env.dir.path().join("data/kernels").exists(), "nothing was written");
}

#[test]
fn a_peer_of_another_user_is_refused() {
    let Some(mut env) = env() else { return };
    if !nix::unistd::geteuid().is_root() {
        common::skipped("needs root to act as another user");
        return;
    }
    // The other user must reach the socket: its dirs searchable, the socket file itself open,
    // so that only the agent's own check stands in the way.
    std::fs::set_permissions(env.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let agent = Agent::start(&mut env);
    // Open the socket file itself, so that only the agent's own check stands in the way.
    std::fs::set_permissions(&agent.socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = env.cmd(&["ps"]).env("HOME", "/").uid(65534).gid(65534).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "PERMISSION_DENIED has its own exit status: {err}");
    assert!(
        err.contains("error[PERMISSION_DENIED]") && err.contains("may not use"),
        "a real code, not IO_ERROR: {err}"
    );
}

#[test]
fn vms_outlive_a_killed_agent_and_gc_spares_them_while_they_run() {
    let Some(mut env) = env() else { return };
    let mut agent = Agent::start(&mut env);
    detach(&env, "keep1", "console=ttyS0 probe.count=20");
    let (_, inspect, _) = run(&env, &["inspect", "keep1"]);
    let vm: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let pid = vm["pid"].as_i64().unwrap() as i32;
    let console = env.runtime().join("keep1/console.log");
    agent.process.kill().unwrap();
    agent.process.wait().unwrap();
    // The guest keeps running and writing its console to the file.
    let grows = |from: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&console).map_or(0, |m| m.len()) <= from && Instant::now() < deadline {
            std::thread::yield_now();
        }
        std::fs::metadata(&console).map_or(0, |m| m.len()) > from
    };
    let size = std::fs::metadata(&console).unwrap().len();
    assert!(grows(size), "the console file keeps growing after the agent died");
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(), "Firecracker runs");
    let (code, _, err) = run(&env, &["gc"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(env.runtime().join("keep1").exists(), "gc spares a detached VM that runs: {err}");
    // Once its process is gone it is an orphan like any other.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        && Instant::now() < deadline
    {
        std::thread::yield_now();
    }
    let (code, out, err) = run(&env, &["gc"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("keep1"), "reclaimed: {out} {err}");
    assert!(env.runtime_is_empty());
}

/// The probe's count lines in `logs` output.
fn counts(logs: &str) -> Vec<u64> {
    logs.lines().filter_map(|l| l.strip_prefix("smartvm-probe count n=").and_then(|n| n.parse().ok())).collect()
}

#[test]
fn a_restarted_agent_adopts_running_vms_and_reclaims_dead_ones() {
    let Some(mut env) = env() else { return };
    let mut agent = Agent::start(&mut env);
    let ids: Vec<String> = (0..6).map(|i| format!("ad{i}")).collect();
    for id in &ids {
        detach(&env, id, "console=ttyS0 probe.count=20");
    }
    let (_, inspect, _) = run(&env, &["inspect", "ad5"]);
    let doomed = serde_json::from_str::<serde_json::Value>(&inspect).unwrap()["pid"].as_i64().unwrap() as i32;
    agent.process.kill().unwrap();
    agent.process.wait().unwrap();
    // One VM dies while no agent runs.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(doomed), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{doomed}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "the killed VM ends");
        std::thread::yield_now();
    }
    env.extra_env.retain(|(k, _)| k != "SMARTVM_AGENT_SOCKET");
    std::fs::remove_dir_all(env.dir.path().join("agent")).unwrap();
    let _agent = Agent::start(&mut env);
    let (_, ps, _) = run(&env, &["ps", "-a", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ps).unwrap();
    let states: Vec<(&str, &str)> =
        listed.iter().map(|v| (v["id"].as_str().unwrap(), v["state"].as_str().unwrap())).collect();
    let running = ["ad0", "ad1", "ad2", "ad3", "ad4"].map(|id| (id, "running"));
    assert_eq!(states[..5], running, "all five live VMs are adopted");
    assert_eq!(states[5], ("ad5", "error"), "the dead one is reported failed");
    assert!(listed[5]["exit"].is_object() && listed[5]["pid"].is_null(), "{ps}");
    assert!(!env.runtime().join("ad5").exists(), "what the dead VM left was reclaimed");
    let (code, _, err) = run(&env, &["rm", "ad5"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&env, &["stop", "ad4"]);
    assert_eq!(code, Some(0), "stop works on an adopted VM: {err}");
    assert!(run(&env, &["inspect", "ad4"]).1.contains("\"state\": \"stopped\""));
    // Logs continue without gaps or repeats across the restart.
    for id in &ids[..4] {
        let mut follow = Running(env.cmd(&["logs", "-f", id]).stdout(Stdio::piped()).spawn().unwrap());
        let seen: Vec<u64> = BufReader::new(follow.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| counts(&l).first().copied())
            .take_while(|&n| n < 60)
            .collect();
        assert!(seen.len() >= 50, "{id}: {seen:?}");
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{id}: no gaps or repeats: {seen:?}");
        assert_eq!(seen[0], 0, "{id}: from the start");
    }
    remove_all(&env, &ids[..5]);
    assert!(env.runtime_is_empty());
}

#[test]
fn attach_types_into_the_guest_and_detaching_leaves_it_running() {
    use std::io::Write;
    let Some(mut env) = env() else { return };
    let _agent = Agent::start(&mut env);
    detach(&env, "echo1", "console=ttyS0 probe.echo");
    let mut attach = Running(
        env.cmd(&["attach", "echo1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = attach.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin = attach.stdin.take().unwrap();
    // The output stream may subscribe after the first line went in: type until it echoes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let echoed = loop {
        assert!(Instant::now() < deadline, "the guest echoes what attach typed");
        stdin.write_all(b"hello from attach\n").unwrap();
        match seen.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.starts_with("smartvm-probe echo line=") => break line,
            _ => continue,
        }
    };
    assert_eq!(echoed, "smartvm-probe echo line=\"hello from attach\"");
    drop(stdin); // EOF detaches
    assert!(common::wait_for_exit(attach.id() as i32, 10_000), "attach ends at the end of its input");
    assert_eq!(attach.wait().unwrap().code(), Some(0));
    // Ctrl-] detaches too, with stdin still open.
    let mut again = Running(
        env.cmd(&["attach", "echo1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut keys = again.stdin.take().unwrap();
    keys.write_all(&[0x1d]).unwrap();
    assert!(common::wait_for_exit(again.id() as i32, 10_000), "Ctrl-] detaches");
    assert_eq!(again.wait().unwrap().code(), Some(0));
    drop(keys);
    let (_, inspect, _) = run(&env, &["inspect", "echo1"]);
    assert!(inspect.contains("\"state\": \"running\""), "detaching leaves the VM running: {inspect}");
    let (code, _, err) = run(&env, &["rm", "-f", "echo1"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn under_systemd_notify_the_agent_reports_ready_once_it_answers() {
    let Some(env) = env() else { return };
    let notify = env.dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let socket = env.dir.path().join("agent.sock");
    let _agent = Running(
        env.cmd(&["serve", "--socket", socket.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &notify)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("READY=1 within 10 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // Ready means answering.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(AgentClient::new(&socket).info()).expect("the agent answers once it said it is ready");
}

#[test]
fn fifty_vms_created_through_the_api_at_once_all_run_and_all_go() {
    let Some(mut env) = env() else { return };
    let agent = Agent::start(&mut env);
    let kernel = smartvm::probe::install_probe_kernel(&env.dir.path().join("k")).unwrap();
    let client = AgentClient::new(&agent.socket);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let configs: Vec<smartvm::VmConfig> = (0..50)
        .map(|i| {
            smartvm::VmConfig::new(&kernel)
                .with_id(format!("many{i}"))
                .with_machine(1, 16)
                .with_boot_args("console=ttyS0 probe.count=1000")
        })
        .collect();
    let created = runtime.block_on(futures_util::future::join_all(configs.iter().map(|c| client.create(c))));
    let failed: Vec<String> = created.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let listed = runtime.block_on(client.list()).unwrap();
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|vm| vm.state == smartvm::VmState::Running && vm.pid.is_some()), "all run");
    let removed = runtime.block_on(futures_util::future::join_all(listed.iter().map(|vm| client.remove(&vm.id, true))));
    assert!(removed.iter().all(Result::is_ok), "{removed:?}");
    assert!(runtime.block_on(client.list()).unwrap().is_empty());
    assert!(env.runtime_is_empty());
}

#[test]
fn snapshots_go_through_the_agent_and_restore_into_detached_clones() {
    let Some(mut env) = env() else { return };
    let _agent = Agent::start(&mut env);
    detach(&env, "snapsrc", "console=ttyS0 probe.count=20");
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts(&run(&env, &["logs", "snapsrc"]).1).len() < 3 {
        assert!(Instant::now() < deadline, "the source counts");
        std::thread::yield_now();
    }
    let bundle = env.dir.path().join("agent-bundle");
    let (code, out, err) = run(&env, &["snapshot", "take", "snapsrc", "--out", bundle.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), bundle.join("snapshot.json").to_str().unwrap());
    let taken_at = *counts(&run(&env, &["logs", "snapsrc"]).1).last().unwrap();
    let (code, out, err) =
        run(&env, &["snapshot", "restore", bundle.to_str().unwrap(), "-d", "--id", "cl", "--count", "3"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["cl-0", "cl-1", "cl-2"]);
    for id in ["cl-0", "cl-1", "cl-2"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let seen = counts(&run(&env, &["logs", id]).1);
            if !seen.is_empty() || Instant::now() > deadline {
                break seen;
            }
            std::thread::yield_now();
        };
        assert!(
            !seen.is_empty() && seen[0] > 0 && seen[0] <= taken_at + 1,
            "{id} counts on from the snapshot: {seen:?}"
        );
    }
    remove_all(&env, ["snapsrc", "cl-0", "cl-1", "cl-2"]);
    assert!(env.runtime_is_empty());
}

#[test]
fn events_stream_state_changes_and_sigterm_leaves_vms_running() {
    let Some(mut env) = env() else { return };
    let mut agent = Agent::start(&mut env);
    detach(&env, "ev0", "console=ttyS0 probe.count=50");
    use smartvm::agent::wire::{EventState, VmEvent};
    use smartvm::lifecycle::Step;
    use smartvm::VmState;
    let (tx, events) = std::sync::mpsc::channel::<VmEvent>();
    let socket = agent.socket.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = runtime.block_on(AgentClient::new(&socket).events(|e| tx.send(e).is_ok()));
    });
    let next = |what: &str| events.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("event: {what}"));
    let first = next("ev0's current state");
    assert_eq!((first.id.as_str(), first.state), ("ev0", EventState::Vm(VmState::Running)));
    // A guest that ends by itself, as the VM published it: created, each start step while
    // configuring, running, then stopped with its exit code.
    let (code, _, err) = run(&env, &["run", "-d", "--id", "ev1"]);
    assert_eq!(code, Some(0), "{err}");
    let mut ev1: Vec<VmEvent> = Vec::new();
    while ev1.last().is_none_or(|e| e.state != EventState::Vm(VmState::Stopped)) {
        let e = next("ev1");
        if e.id == "ev1" {
            ev1.push(e);
        }
    }
    let mut states: Vec<EventState> = ev1.iter().map(|e| e.state).collect();
    states.dedup();
    assert_eq!(
        states,
        [
            EventState::Vm(VmState::Created),
            EventState::Vm(VmState::Configuring),
            EventState::Vm(VmState::Running),
            EventState::Vm(VmState::Stopped)
        ]
    );
    let steps: Vec<Step> = ev1.iter().filter_map(|e| e.step).collect();
    assert_eq!(steps.first(), Some(&Step::CheckHost), "{steps:?}");
    assert!(steps.contains(&Step::Spawn), "{steps:?}");
    assert_eq!(steps.iter().collect::<std::collections::HashSet<_>>().len(), steps.len(), "each step once");
    assert_eq!(ev1.last().unwrap().exit.and_then(|e| e.code), Some(0));
    run(&env, &["pause", "ev0"]);
    run(&env, &["resume", "ev0"]);
    run(&env, &["rm", "ev1"]);
    let seen: Vec<(String, EventState)> = (0..3).map(|_| next("pause, resume, rm")).map(|e| (e.id, e.state)).collect();
    let expected = [
        ("ev0", EventState::Vm(VmState::Paused)),
        ("ev0", EventState::Vm(VmState::Running)),
        ("ev1", EventState::Removed),
    ]
    .map(|(a, b)| (a.to_string(), b));
    assert_eq!(seen, expected);

    // SIGTERM: open streams end, the agent exits, the VM keeps running for the next agent.
    let mut follow = Running(env.cmd(&["logs", "-f", "ev0"]).stdout(Stdio::piped()).spawn().unwrap());
    let mut followed = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    followed.read_line(&mut line).unwrap();
    assert!(line.starts_with("smartvm-probe"), "the stream is open: {line}");
    let pid = agent.process.id() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(common::wait_for_exit(pid, 10_000), "the agent ends on SIGTERM despite open streams");
    assert_eq!(agent.process.wait().unwrap().code(), Some(0));
    assert!(common::wait_for_exit(follow.id() as i32, 10_000), "logs -f ends with the agent");
    let _ = follow.wait();
    env.extra_env.retain(|(k, _)| k != "SMARTVM_AGENT_SOCKET");
    std::fs::remove_dir_all(env.dir.path().join("agent")).unwrap();
    let _agent = Agent::start(&mut env);
    let (_, inspect, _) = run(&env, &["inspect", "ev0"]);
    assert!(inspect.contains("\"state\": \"running\""), "the next agent adopted it: {inspect}");
    let (code, _, err) = run(&env, &["rm", "-f", "ev0"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(env.runtime_is_empty());
}

/// Serves `files` (path → bytes) over HTTP on 127.0.0.1; returns the base URL.
fn serve_files(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut app = axum::Router::new();
            for (path, bytes) in files {
                app = app.route(path, axum::routing::get(move || async move { bytes.clone() }));
            }
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    base
}

#[test]
fn a_vm_from_a_hosted_base_image_through_the_api() {
    use sha2::Digest;
    let Some(mut env) = env() else { return };
    let agent = Agent::start(&mut env);
    let kernel = std::fs::read(smartvm::probe::install_probe_kernel(&env.dir.path().join("k")).unwrap()).unwrap();
    let rootfs = vec![0u8; 64 << 10];
    let sha = |b: &[u8]| sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>();
    let (ks, rs) = (sha(&kernel), sha(&rootfs));
    let files = vec![("/vmlinux", kernel), ("/rootfs.ext4", rootfs)];
    let base = serve_files(files);
    let manifest = serde_json::json!({
        "schemaVersion": 1, "bundleId": "probe-image", "arch": "x86_64", "firecrackerVersion": "v1.12.1",
        "rootfsType": "ext4", "rootfsIsReadOnly": false, "bootArgs": "console=ttyS0 probe.halt",
        "kernel": {"url": format!("{base}/vmlinux"), "sha256": ks},
        "rootfs": {"url": format!("{base}/rootfs.ext4"), "sha256": rs}
    });
    let manifest_base = serve_files(vec![("/manifest.json", manifest.to_string().into_bytes())]);
    let raw = smartvm::api::ApiClient::new(&agent.socket).with_timeout(Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let post = |body: serde_json::Value| {
        runtime
            .block_on(raw.request(smartvm::api::Method::POST, "/v1/vms", Some(body.to_string().into_bytes())))
            .unwrap()
    };
    let url = format!("{manifest_base}/manifest.json");
    let created = post(serde_json::json!({"image": {"manifest": url}, "id": "img1", "memMib": 16}));
    assert_eq!(created.status_code, 201, "{}", created.body);
    let vm: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    assert_eq!(vm["config"]["drives"][0]["driveId"], "rootfs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = run(&env, &["logs", "img1"]).1;
        if logs.contains("smartvm-probe done") || Instant::now() > deadline {
            break logs;
        }
        std::thread::yield_now();
    };
    assert!(logs.contains("type=block"), "the probe sees the image's rootfs: {logs}");
    for (body, field) in [
        (serde_json::json!({"image": {"manifest": "/etc/passwd"}}), "image.manifest"),
        (serde_json::json!({"image": {"preset": "nope"}}), "image.preset"),
    ] {
        let refused = post(body);
        assert_eq!(refused.status_code, 422, "{}", refused.body);
        assert!(refused.body.contains(field), "{}", refused.body);
    }
    let (code, _, err) = run(&env, &["rm", "-f", "img1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(env.runtime_is_empty());
}

#[test]
fn stop_vms_on_exit_stops_and_cleans_up_with_the_agent() {
    let Some(env) = env() else { return };
    let socket = env.dir.path().join("stopping.sock");
    let mut agent = Running(
        env.cmd(&["serve", "--stop-vms-on-exit", "--socket", socket.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_answers(&socket);
    let client = AgentClient::new(&socket);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let kernel = smartvm::probe::install_probe_kernel(&env.dir.path().join("k")).unwrap();
    let cfg = smartvm::VmConfig::new(&kernel)
        .with_id("bye")
        .with_machine(1, 16)
        .with_boot_args("console=ttyS0 probe.count=50");
    let vm = runtime.block_on(client.create(&cfg)).unwrap();
    let pid = vm.pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(common::wait_for_exit(agent.id() as i32, 15_000), "the agent ends");
    assert_eq!(agent.wait().unwrap().code(), Some(0));
    assert!(common::wait_for_exit(pid, 5_000), "its VM was stopped with it");
    assert!(env.runtime_is_empty(), "and cleaned up");
}

/// Firecracker processes started for `env`'s runtime dir.
fn firecrackers(env: &Env) -> Vec<i32> {
    let runtime = env.runtime().display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).into_owned();
        if cmd.contains(&runtime) && cmd.contains("firecracker") && smartvm::vm::process_start_time(pid).is_some() {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (bounded) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

/// SIGKILL the agent at twenty moments of a mixed burst (creates, a restore of clones, a
/// snapshot): before any VM dir exists, as the n-th appears, as the n-th runs: the next agent accounts for every Firecracker left — each one
/// running is listed (adopted), the rest were reclaimed — and `rm` + `gc` leave nothing.
#[test]
fn an_agent_killed_at_any_moment_of_a_burst_loses_no_vm() {
    let Some(mut env) = env() else { return };
    let client_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A bundle to restore from in every burst.
    let bundle = env.dir.path().join("burst-bundle");
    {
        let _agent = Agent::start(&mut env);
        detach(&env, "src", "console=ttyS0 probe.count=100000");
        let (code, _, err) = run(&env, &["snapshot", "take", "src", "--out", bundle.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{err}");
        remove_all(&env, ["src"]);
    }
    env.extra_env.retain(|(k, _)| k != "SMARTVM_AGENT_SOCKET");
    std::fs::remove_dir_all(env.dir.path().join("agent")).unwrap();
    let quiet =
        |env: &Env, args: &[&str]| Running(env.cmd(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    for moment in 0..20usize {
        let mut agent = Agent::start(&mut env);
        // A mixed burst: three creates, a restore of two clones, and a snapshot of the first
        // create (which may not exist yet: then that request fails, as it would for anyone).
        let mut burst: Vec<Running> = (0..3)
            .map(|k| {
                let id = format!("b{moment}-{k}");
                quiet(&env, &["run", "-d", "--id", &id, "--boot-args", "console=ttyS0 probe.count=100000"])
            })
            .collect();
        let clones = format!("r{moment}");
        burst.push(quiet(
            &env,
            &["snapshot", "restore", bundle.to_str().unwrap(), "-d", "--id", &clones, "--count", "2"],
        ));
        let taken = env.dir.path().join(format!("taken-{moment}"));
        burst.push(quiet(&env, &["snapshot", "take", &format!("b{moment}-0"), "--out", taken.to_str().unwrap()]));
        let n = moment / 4;
        let dirs = || {
            std::fs::read_dir(env.runtime())
                .map_or(0, |d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(['b', 'r'])).count())
        };
        match moment % 2 {
            0 => wait_until("VM dirs appear", || dirs() >= n),
            _ => {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let list = client_runtime.block_on(AgentClient::new(&agent.socket).list());
                    let states: Vec<(String, smartvm::VmState)> =
                        list.iter().flatten().map(|v| (v.id.clone(), v.state)).collect();
                    if states.iter().filter(|(_, s)| *s == smartvm::VmState::Running).count() >= n {
                        break;
                    }
                    let seen = list.map(|_| states);
                    assert!(Instant::now() < deadline, "moment {moment}: {n} VMs do not run; the agent lists {seen:?}");
                    std::thread::yield_now();
                }
            }
        }
        let pid = agent.process.id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        assert!(common::wait_for_exit(pid, 10_000));
        let _ = agent.process.wait();
        for mut client in burst {
            let _ = client.wait();
        }
        env.extra_env.retain(|(k, _)| k != "SMARTVM_AGENT_SOCKET");
        std::fs::remove_dir_all(env.dir.path().join("agent")).unwrap();
        std::mem::forget(agent); // its Drop would kill the VMs the next agent must find

        let next = Agent::start(&mut env);
        let listed = client_runtime.block_on(AgentClient::new(&next.socket).list()).unwrap();
        let listed_pids: Vec<i32> = listed.iter().filter_map(|v| v.pid).collect();
        for pid in firecrackers(&env) {
            assert!(listed_pids.contains(&pid), "moment {moment}: Firecracker {pid} runs unlisted; listed {listed:?}");
        }
        remove_all(&env, listed.iter().map(|v| v.id.clone()));
        let (code, _, err) = run(&env, &["gc"]);
        assert_eq!(code, Some(0), "{err}");
        wait_until("no Firecracker is left", || firecrackers(&env).is_empty());
        assert!(
            env.runtime_is_empty(),
            "moment {moment}: {:?}",
            std::fs::read_dir(env.runtime()).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        drop(next);
        env.extra_env.retain(|(k, _)| k != "SMARTVM_AGENT_SOCKET");
        std::fs::remove_dir_all(env.dir.path().join("agent")).unwrap();
    }
}
