//! `smartvm pool create|ls|rm` and `run --pool` against the real binary, agent and Firecracker:
//! a pool fills, `run --pool` streams a pooled VM's console to its end (with the pool's config
//! or the --config given) and removes it, `-d` leaves it to the agent, and bad input says why.

mod common;

use std::time::{Duration, Instant};

use common::agent::{run, Agent};
use common::env;
use smartvm::agent::AgentClient;

/// Waits (at most 20 s) until pool `name` holds `ready` VMs.
fn wait_ready(agent: &Agent, name: &str, ready: usize) {
    let client = AgentClient::new(&agent.socket);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = runtime.block_on(client.pool(name)).unwrap();
        if stats.ready >= ready {
            return;
        }
        assert!(Instant::now() < deadline, "{name} fills: {stats:?}");
        std::thread::yield_now();
    }
}

#[test]
fn pool_create_run_from_it_and_remove() {
    let Some(mut env) = env() else { return };
    let agent = Agent::start(&mut env);
    let (code, out, err) = run(&env, &["pool", "create", "warm", "--size", "2"]);
    assert_eq!((code, out.trim()), (Some(0), "warm"), "{err}");
    wait_ready(&agent, "warm", 2);
    let (_, ls, _) = run(&env, &["pool", "ls"]);
    assert!(ls.lines().any(|l| l.starts_with("warm") && l.contains("cold")), "{ls}");
    assert_eq!(run(&env, &["ps", "-a", "--json"]).1.trim(), "[]", "waiting VMs are the pool's, not listed");

    // The pool's config (the probe, which ends at once) streams to its end; the VM is removed.
    let (code, out, err) = run(&env, &["run", "--pool", "warm"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("smartvm-probe boot"), "{out}");
    assert!(err.contains("from pool warm"), "{err}");
    // A config of its own: three lines.
    let kernel = env.dir.path().join("data/kernels");
    let kernel = std::fs::read_dir(&kernel).unwrap().flatten().next().unwrap().path();
    let config = serde_json::json!({
        "bootSource": {"kernelImagePath": kernel, "bootArgs": "console=ttyS0 probe.lines=3"},
        "machineConfig": {"vcpuCount": 1, "memSizeMib": 16},
    });
    let file = env.dir.path().join("lines.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let (code, out, err) = run(&env, &["run", "--pool", "warm", "--config", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("smartvm-probe line n=2"), "{out}");

    // Detached: the agent holds it.
    let (code, id, err) = run(&env, &["run", "--pool", "warm", "-d"]);
    assert_eq!(code, Some(0), "{err}");
    let id = id.trim();
    assert!(id.starts_with("warm-"), "{id}");
    assert!(run(&env, &["ps", "-a"]).1.contains(id));
    assert_eq!(run(&env, &["rm", "-f", id]).0, Some(0));

    let (code, _, err) = run(&env, &["run", "--pool", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("POOL_NOT_FOUND") && err.contains("smartvm pool ls"), "{err}");
    let (code, _, err) = run(&env, &["run", "--pool", "warm", "--mem", "64"]);
    assert_eq!(code, Some(2), "the pool's VM is not shaped by flags: {err}");
    let (code, _, err) = run(&env, &["pool", "create", "bad name", "--size", "0"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("name") && err.contains("size"), "{err}");

    let (code, out, err) = run(&env, &["pool", "rm", "warm"]);
    assert_eq!((code, out.trim()), (Some(0), "warm"), "{err}");
    assert_eq!(run(&env, &["pool", "ls", "--json"]).1.trim(), "[]");
    assert!(env.runtime_is_empty(), "the waiting VMs are gone");
}
