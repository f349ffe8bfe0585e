//! The guest verbs against VMs held by the host agent, through real Firecracker: probe VMs
//! serving the guest protocol on vsock (`probe.vsock=`) answer `ping` and the agent's API;
//! `exec` gets the probe's clear "not supported"; a VM without vsock is unavailable at once.

mod common;

use std::time::{Duration, Instant};

use common::agent::{remove_all, run, Agent};
use common::env;
use smartvm::agent::AgentClient;

fn wait_for_console(env: &common::Env, id: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, logs, _) = run(env, &["logs", id]);
        if logs.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never printed {text:?}: {logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ping_exec_and_the_api_reach_a_probe_guest_over_vsock() {
    let Some(mut env) = env() else { return };
    let agent = Agent::start(&mut env);
    let uds = env.dir.path().join("g1.vsock");
    let vsock = format!("3:{}", uds.display());
    let boot = "console=ttyS0 probe.vsock=10700";
    let (code, _, err) = run(&env, &["run", "-d", "--id", "g1", "--vsock-device", &vsock, "--boot-args", boot]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&env, &["run", "-d", "--id", "g2", "--boot-args", "console=ttyS0 probe.count=1000"]);
    assert_eq!(code, Some(0), "{err}");
    wait_for_console(&env, "g1", "status=listening");

    let (code, out, err) = run(&env, &["ping", "--json", "g1"]);
    assert_eq!(code, Some(0), "{err}");
    let hello: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hello["name"], "smartvm-probe");
    assert_eq!(hello["capabilities"], serde_json::json!(["hello", "echo", "health", "exec"]));

    // The probe's exec runs its built-in programs; the status is smartvm's exit code.
    let (code, out, err) = run(&env, &["exec", "g1", "--", "echo", "from", "the", "probe"]);
    assert_eq!((code, out.as_str()), (Some(0), "from the probe\n"), "{err}");
    let (code, _, err) = run(&env, &["exec", "g1", "--", "exit", "4"]);
    assert_eq!(code, Some(4), "{err}");
    // What the probe cannot do is refused with the guest's reason.
    let local = env.dir.path().join("copied");
    std::fs::create_dir_all(&local).unwrap();
    let (code, _, err) = run(&env, &["cp", "g1:/etc/hostname", local.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("GUEST_REFUSED") && err.contains("not supported by this guest"), "{err}");

    let started = Instant::now();
    let (code, _, err) = run(&env, &["exec", "g2", "--", "true"]);
    assert!(err.contains("GUEST_UNAVAILABLE") && err.contains("no vsock device"), "{err}");
    assert_eq!(code, Some(1));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = AgentClient::new(&agent.socket);
    let echoed = runtime.block_on(client.guest("g1", None).echo("through the agent")).unwrap();
    assert_eq!(echoed, "through the agent");
    let missing = runtime.block_on(client.guest("nope", None).hello()).unwrap_err();
    assert_eq!(missing.code(), smartvm::error::ErrorCode::VmNotFound);
    remove_all(&env, ["g1", "g2"]);
}
