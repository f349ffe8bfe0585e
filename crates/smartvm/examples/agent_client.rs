//! Drives a running host agent (`smartvm serve`) through the typed client: start a probe VM
//! that outlives this program, watch its console, list, stop and remove it; then keep a warm
//! pool in the agent and take a VM from it.
//!
//! ```text
//! smartvm serve &                       # as root
//! cargo run -p smartvm --example agent_client
//! ```

use std::time::Duration;

use smartvm::agent::wire::PoolRequest;
use smartvm::agent::AgentClient;
use smartvm::probe::{install_probe_kernel, ProbeArgs};
use smartvm::{SmartVmError, SmartVmOptions, VmConfig};

#[tokio::main]
async fn main() -> Result<(), SmartVmError> {
    let options = SmartVmOptions::from_env();
    let agent = AgentClient::new(AgentClient::default_socket(&options));
    let info = agent.info().await?; // AGENT_UNAVAILABLE when no agent runs
    println!("agent {} (pid {}) holds {} VMs", info.version, info.pid, info.vms);

    let kernel = install_probe_kernel(&options.data_dir.join("kernels"))?;
    let config = VmConfig::new(kernel)
        .with_id("example-agent")
        .with_machine(1, 16)
        .with_boot_args(format!("console=ttyS0 {}", ProbeArgs::new().count(200).to_boot_args()));
    let vm = agent.create(&config).await?;
    println!("{} is {} (pid {:?})", vm.id, vm.state, vm.pid);

    // The console so far (`follow_logs` keeps streaming it, `events` streams state changes).
    print!("{}", agent.logs(&vm.id).await?);

    for vm in agent.list().await? {
        println!("{} {} uptime {:?}s", vm.id, vm.state, vm.uptime_s);
    }
    let stopped = agent.stop(&vm.id, Some(Duration::from_secs(2))).await?;
    println!("stopped by {}", stopped.step);
    agent.remove(&vm.id, false).await?;

    // A pool of two warm Firecrackers the agent keeps (across its restarts, too); a checkout
    // boots one with the pool's config (a probe that reports and ends).
    let pooled = VmConfig { id: None, ..config.clone().with_boot_args("console=ttyS0") };
    let request = PoolRequest {
        name: "example".into(),
        size: 2,
        refill_concurrency: None,
        config: Some(pooled),
        template: None,
        preconfigured: false,
    };
    let pool = agent.create_pool(&request).await?;
    println!("pool {} ({}): {} ready", pool.name, pool.kind, pool.ready);
    let vm = agent.checkout("example", None).await?;
    println!("{} from the pool is {}", vm.id, vm.state);
    agent.remove(&vm.id, true).await?;
    agent.remove_pool("example").await
}
