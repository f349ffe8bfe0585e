#![cfg(feature = "agent")]
//! Warm pools through the host agent: created, listed, checked out and removed over its API,
//! kept across an agent restart (the next agent makes them again and takes over the VMs that
//! waited in them), and a recorded pool that cannot be made again leaves no VM running.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use smartvm::agent::server::{bind, AdoptReport, AgentServer};
use smartvm::agent::wire::PoolRequest;
use smartvm::agent::AgentClient;
use smartvm::probe::ProbeArgs;
use smartvm::vm::VmPolicy;
use smartvm::{SmartVmOptions, VmConfig, VmState};

const READY: Duration = Duration::from_secs(20);

struct Agent {
    server: Arc<AgentServer>,
    client: AgentClient,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<smartvm::Result<()>>,
}

/// An agent on `env`'s runtime dir (its VMs detached), after its adoption.
async fn start_agent(env: &common::TestEnv) -> (Agent, AdoptReport) {
    let options = env.smartvm.options().clone();
    let options = SmartVmOptions { vm_policy: VmPolicy { detached: true, ..options.vm_policy.clone() }, ..options };
    let socket = env.dir.path().join("pool-agent.sock");
    let listener = bind(&socket).await.unwrap();
    let server = Arc::new(AgentServer::new(options));
    let report = server.adopt().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = server.clone();
    let task = tokio::spawn(async move {
        serving
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    (Agent { server, client: AgentClient::new(socket), stop, task }, report)
}

impl Agent {
    /// The agent ends (its VMs, pooled ones included, keep running).
    async fn shut_down(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(READY, self.task).await.unwrap().unwrap().unwrap();
        assert_eq!(Arc::strong_count(&self.server), 1);
    }

    async fn filled(&self, name: &str) -> Vec<(String, i32)> {
        let pool = self.server.smartvm().pool(name).unwrap();
        assert!(pool.ready(READY).await, "{:?}", pool.stats());
        pool.ready_vms().into_iter().map(|(id, pid)| (id, pid.unwrap())).collect()
    }
}

fn probe(env: &common::TestEnv, args: &str) -> VmConfig {
    VmConfig { id: None, ..env.probe_config("unused", args) }
}

fn cold(env: &common::TestEnv, name: &str, size: usize) -> PoolRequest {
    let config = Some(probe(env, "probe.count=50"));
    PoolRequest { name: name.into(), size, refill_concurrency: None, config, template: None, preconfigured: false }
}

/// A snapshot bundle of a counting probe, in `env`'s dir.
async fn template_bundle(env: &common::TestEnv) -> std::path::PathBuf {
    let origin = env.smartvm.create_vm(&env.probe_config("origin", "probe.count=50")).unwrap();
    origin.start().await.unwrap();
    common::next_count(&origin, Some(1), READY).await.expect("counting");
    let bundle = env.dir.path().join("template");
    origin.pause().await.unwrap();
    origin.snapshot(&bundle, None).await.unwrap();
    env.smartvm.remove_vm("origin").await.unwrap();
    bundle
}

fn pids(vms: &[(String, i32)]) -> BTreeSet<i32> {
    vms.iter().map(|(_, pid)| *pid).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_makes_its_pools_again_with_the_vms_that_waited() {
    let Some(env) = common::env() else { return };
    let bundle = template_bundle(&env).await;
    let (first, report) = start_agent(&env).await;
    assert!(report.pools.is_empty() && report.adopted.is_empty(), "{report:?}");
    let stats = first.client.create_pool(&cold(&env, "warm", 2)).await.unwrap();
    assert_eq!((stats.name.as_str(), stats.kind.as_str(), stats.size), ("warm", "cold", 2));
    let template = PoolRequest { template: Some(bundle), config: None, ..cold(&env, "tmpl", 1) };
    assert_eq!(first.client.create_pool(&template).await.unwrap().kind, "template");
    let warm = first.filled("warm").await;
    let mut guard = common::KillOnDrop(pids(&warm).into_iter().collect());

    // A checkout is a VM of the agent's, running on the warm Firecracker that waited longest.
    let used = first.client.checkout("warm", None).await.unwrap();
    assert_eq!((used.state, used.pid), (VmState::Running, Some(warm[0].1)));
    assert_eq!(first.client.list().await.unwrap().iter().map(|v| v.id.clone()).collect::<Vec<_>>(), [used.id.as_str()]);
    let warm = first.filled("warm").await; // refilled
    let tmpl = first.filled("tmpl").await;
    guard.0.extend(pids(&warm).iter().chain(&pids(&tmpl)));
    let names: Vec<String> = first.client.pools().await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["tmpl", "warm"]);
    first.shut_down().await;
    for pid in pids(&warm).iter().chain(&pids(&tmpl)).chain(&[used.pid.unwrap()]) {
        assert!(common::pid_alive(*pid), "{pid} outlives the agent");
    }

    // The next agent makes both pools again, holding the very VMs that waited.
    let (second, report) = start_agent(&env).await;
    assert!(report.pools_failed.is_empty() && report.failed.is_empty(), "{report:?}");
    let ids = |vms: &[(String, i32)]| vms.iter().map(|(id, _)| id.clone()).collect::<BTreeSet<_>>();
    let adopted: Vec<(String, BTreeSet<String>)> =
        report.pools.iter().map(|(name, vms)| (name.clone(), vms.iter().cloned().collect())).collect();
    assert_eq!(adopted, [("tmpl".to_string(), ids(&tmpl)), ("warm".to_string(), ids(&warm))]);
    assert_eq!(report.adopted, [used.id.as_str()], "the checked-out VM is an ordinary VM");
    let readopted = second.server.smartvm().pool("warm").unwrap().ready_vms();
    assert_eq!(readopted.iter().map(|(_, p)| p.unwrap()).collect::<BTreeSet<_>>(), pids(&warm));
    // Taking the pool over twice is refused before anything is touched.
    let twice = second.server.smartvm().adopt_pool(cold(&env, "warm", 2).to_spec().unwrap()).await.unwrap_err();
    assert_eq!(twice.code(), "INVALID_CONFIG", "{twice}");
    assert_eq!(second.server.smartvm().pool("warm").unwrap().ready_vms(), readopted);
    assert!(pids(&warm).iter().all(|p| common::pid_alive(*p)));

    // They are handed out as before: a warm one boots the checkout's config, a paused one resumes.
    let config = probe(&env, &ProbeArgs::new().lines(2).to_boot_args());
    let booted = second.client.checkout("warm", Some(&config)).await.unwrap();
    assert!(pids(&warm).contains(&booted.pid.unwrap()), "one that waited before the restart");
    let vm = second.server.smartvm().vm(&booted.id).unwrap();
    assert_eq!(common::report(&vm).await.lines, [0, 1], "booted with the checkout's config");
    let resumed = second.client.checkout("tmpl", None).await.unwrap();
    assert_eq!((resumed.state, resumed.pid), (VmState::Running, Some(tmpl[0].1)));
    let vm = second.server.smartvm().vm(&resumed.id).unwrap();
    common::next_count(&vm, None, READY).await.expect("the restored guest counts on");

    // Removing a pool destroys what waits in it and forgets it; the VMs checked out stay.
    let waiting = second.server.smartvm().pool("warm").unwrap().ready_vms();
    second.client.remove_pool("warm").await.unwrap();
    for (_, pid) in &waiting {
        assert!(common::wait_gone(pid.unwrap()), "a waiting VM of a removed pool is destroyed");
    }
    let gone = second.client.pool("warm").await.unwrap_err();
    assert_eq!(gone.code(), "POOL_NOT_FOUND", "{gone}");
    assert_eq!(second.client.remove_pool("warm").await.unwrap_err().code(), "POOL_NOT_FOUND");
    assert!(!env.smartvm.runtime_dir().join(".pools/warm.json").exists());
    assert!(common::pid_alive(used.pid.unwrap()), "a VM checked out of it keeps running");
    for id in [&used.id, &booted.id, &resumed.id] {
        second.client.remove(id, true).await.unwrap();
    }
    second.client.remove_pool("tmpl").await.unwrap();
    second.shut_down().await;
    let (third, report) = start_agent(&env).await;
    assert!(report.pools.is_empty() && report.adopted.is_empty() && report.reclaimed.is_empty(), "{report:?}");
    third.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_pool_that_cannot_be_made_again_leaves_no_vm_running() {
    let Some(env) = common::env() else { return };
    let (first, _) = start_agent(&env).await;
    first.client.create_pool(&cold(&env, "doomed", 2)).await.unwrap();
    let waiting = first.filled("doomed").await;
    let _guard = common::KillOnDrop(pids(&waiting).into_iter().collect());
    first.shut_down().await;
    // Its record can no longer be trusted (others may write it): the next agent does not act on it.
    let record = env.smartvm.runtime_dir().join(".pools/doomed.json");
    std::fs::set_permissions(&record, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();

    let (second, report) = start_agent(&env).await;
    assert!(report.pools.is_empty());
    assert_eq!(report.pools_failed.len(), 1, "{report:?}");
    assert_eq!(
        (report.pools_failed[0].0.as_path(), report.pools_failed[0].1.code().as_str()),
        (record.as_path(), "UNTRUSTED_PATH")
    );
    let reclaimed: BTreeSet<String> = report.reclaimed.iter().cloned().collect();
    assert_eq!(reclaimed, waiting.iter().map(|(id, _)| id.clone()).collect(), "nothing answers for them");
    for (id, pid) in &waiting {
        assert!(common::wait_gone(*pid), "{id} is killed");
        assert!(!env.smartvm.runtime_dir().join(id).exists(), "{id} is unwound");
    }
    assert!(second.client.pools().await.unwrap().is_empty());
    second.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_vm_not_in_the_state_its_pool_leaves_it_in_is_replaced() {
    let Some(env) = common::env() else { return };
    let bundle = template_bundle(&env).await;
    let (first, _) = start_agent(&env).await;
    first.client.create_pool(&cold(&env, "swap", 1)).await.unwrap();
    let waiting = first.filled("swap").await;
    let _guard = common::KillOnDrop(pids(&waiting).into_iter().collect());
    first.shut_down().await;
    // The record now says "template": its waiting VM (warm, never restored) is not what such a
    // pool holds, as a restore cut short by a crash would not be.
    let record = env.smartvm.runtime_dir().join(".pools/swap.json");
    let template = PoolRequest { template: Some(bundle), config: None, ..cold(&env, "swap", 1) };
    std::fs::write(&record, serde_json::to_vec(&template).unwrap()).unwrap();

    let (second, report) = start_agent(&env).await;
    assert_eq!(report.pools, [("swap".to_string(), Vec::<String>::new())], "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.reclaimed, [waiting[0].0.as_str()]);
    assert!(common::wait_gone(waiting[0].1), "the VM that did not fit is killed");
    let refilled = second.filled("swap").await;
    let vm = second.client.checkout("swap", None).await.unwrap();
    assert_eq!(vm.pid, Some(refilled[0].1));
    let vm = second.server.smartvm().vm(&vm.id).unwrap();
    common::next_count(&vm, None, READY).await.expect("a restored guest that counts on");
    second.client.remove(vm.id(), true).await.unwrap();
    second.client.remove_pool("swap").await.unwrap();
    second.shut_down().await;
}
