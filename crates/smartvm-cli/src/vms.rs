//! The verbs that work on VMs held by the host agent (`smartvm serve`): `run -d`, `ps`, `logs`,
//! `stop`, `rm`, `inspect`, `pause`, `resume`. They talk to it through
//! [`AgentClient`]; without an agent they fail with `AGENT_UNAVAILABLE` (exit 4) saying how to
//! start one.

use std::io::Write;
use std::time::Duration;

use smartvm::agent::wire::VmSummary;
use smartvm::agent::AgentClient;
use smartvm::{SmartVmOptions, VmConfig};

use crate::exit::{CliError, Exit};

/// The agent's socket: `SMARTVM_AGENT_SOCKET`, else `<runtime dir>/smartvm.sock`.
pub fn client() -> AgentClient {
    let socket = std::env::var_os("SMARTVM_AGENT_SOCKET")
        .map(Into::into)
        .unwrap_or_else(|| AgentClient::default_socket(&SmartVmOptions::from_env()));
    AgentClient::new(socket)
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Also VMs that are not running.
    #[arg(long, short)]
    all: bool,
    /// One JSON array (the agent's VM summaries).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// The VM's id.
    id: String,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Keep printing new console lines until the VM's console ends.
    #[arg(long, short)]
    follow: bool,
    /// The VM's id.
    id: String,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds the guest gets to shut down on Ctrl-Alt-Del before signals follow.
    #[arg(long, short)]
    timeout: Option<u64>,
    /// The VM's id.
    id: String,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Stop it first if it runs.
    #[arg(long, short)]
    force: bool,
    /// The VM's id.
    id: String,
}

/// `run -d`: the agent creates and starts the VM; its id (or with `json` its summary) goes to
/// stdout.
pub async fn detach(cfg: &VmConfig, json: bool) -> Result<Exit, CliError> {
    let vm = client().create(cfg).await?;
    match json {
        true => println!("{}", serde_json::to_string_pretty(&vm).map_err(|e| CliError::new(Exit::Failure, e))?),
        false => println!("{}", vm.id),
    }
    Ok(Exit::Success)
}

fn running(vm: &VmSummary) -> bool {
    matches!(vm.state, smartvm::VmState::Running | smartvm::VmState::Paused)
}

/// The agent's VMs and, from their journals, those other programs own (a containerd shim's);
/// without an agent, only the others — or the agent's error when there are none.
pub async fn ps(args: PsArgs) -> Result<Exit, CliError> {
    let agent = client().list().await;
    let known: Vec<String> = agent.as_ref().map(|vms| vms.iter().map(|v| v.id.clone()).collect()).unwrap_or_default();
    let others: Vec<VmSummary> = smartvm::vm::journaled_vms(&SmartVmOptions::from_env().runtime_dir)
        .iter()
        // VMs waiting in a pool are the pool's (`smartvm pool ls`), not anybody's VMs yet.
        .filter(|vm| vm.owner.is_some() && vm.journal.pool.is_none() && !known.contains(&vm.journal.vm_id))
        .filter_map(VmSummary::from_journal)
        .collect();
    let mut vms = match agent {
        Ok(vms) => vms,
        Err(e) if others.is_empty() => return Err(e.into()),
        Err(e) => {
            eprintln!("note: {e}; listing the VMs other programs own");
            Vec::new()
        }
    };
    vms.extend(others);
    vms.retain(|vm| args.all || running(vm));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vms).map_err(|e| CliError::new(Exit::Failure, e))?);
        return Ok(Exit::Success);
    }
    print_table(&vms);
    Ok(Exit::Success)
}

fn print_table(vms: &[VmSummary]) {
    println!(
        "{:<24} {:<9} {:>8} {:>5} {:>7} {:<15} {:>8}  OWNER",
        "ID", "STATE", "PID", "VCPUS", "MEM", "GUEST IP", "UPTIME"
    );
    for vm in vms {
        let dash = || "-".to_string();
        println!(
            "{:<24} {:<9} {:>8} {:>5} {:>6}M {:<15} {:>8}  {}",
            vm.id,
            vm.state,
            vm.pid.map_or_else(dash, |p| p.to_string()),
            vm.vcpus,
            vm.mem_mib,
            vm.guest_ip.clone().unwrap_or_else(dash),
            vm.uptime_s.map_or_else(dash, |s| format!("{s}s")),
            vm.owner.as_deref().unwrap_or("agent"),
        );
    }
}

pub async fn logs(args: LogsArgs) -> Result<Exit, CliError> {
    let agent = client();
    if !args.follow {
        print!("{}", agent.logs(&args.id).await?);
        return Ok(Exit::Success);
    }
    let mut stdout = std::io::stdout();
    agent
        .follow_logs(&args.id, |chunk| {
            let _ = stdout.write_all(chunk);
            let _ = stdout.flush();
        })
        .await?;
    Ok(Exit::Success)
}

pub async fn stop(args: StopArgs) -> Result<Exit, CliError> {
    let outcome = client().stop(&args.id, args.timeout.map(Duration::from_secs)).await?;
    eprintln!("stopped {} ({})", outcome.id, outcome.step);
    Ok(Exit::Success)
}

pub async fn rm(args: RmArgs) -> Result<Exit, CliError> {
    client().remove(&args.id, args.force).await?;
    println!("{}", args.id);
    Ok(Exit::Success)
}

pub async fn inspect(args: IdArg) -> Result<Exit, CliError> {
    let vm = client().get(&args.id).await?;
    println!("{}", serde_json::to_string_pretty(&vm).map_err(|e| CliError::new(Exit::Failure, e))?);
    Ok(Exit::Success)
}

pub async fn pause(args: IdArg) -> Result<Exit, CliError> {
    println!("{}", client().pause(&args.id).await?.id);
    Ok(Exit::Success)
}

pub async fn resume(args: IdArg) -> Result<Exit, CliError> {
    println!("{}", client().resume(&args.id).await?.id);
    Ok(Exit::Success)
}

/// Ctrl-], the detach key (as in virsh and telnet).
const DETACH_KEY: u8 = 0x1d;

/// `attach ID`: the VM's console output from now on to stdout, stdin to its serial input;
/// Ctrl-] or the end of stdin detaches and leaves the VM running.
pub async fn attach(args: IdArg) -> Result<Exit, CliError> {
    let agent = std::sync::Arc::new(client());
    agent.get(&args.id).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    // stdin is read on a thread of its own: a blocking read cannot be cancelled on the runtime.
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            let chunk = &buf[..n];
            let end = chunk.iter().position(|&b| b == DETACH_KEY);
            let data = end.map_or(chunk, |at| &chunk[..at]).to_vec();
            if (!data.is_empty() && tx.blocking_send(data).is_err()) || n == 0 || end.is_some() {
                break;
            }
        }
    });
    eprintln!("attached to {} (Ctrl-] detaches)", args.id);
    let output = {
        let agent = agent.clone();
        let id = args.id.clone();
        async move {
            let mut stdout = std::io::stdout();
            agent
                .follow_new_logs(&id, |chunk| {
                    let _ = stdout.write_all(chunk);
                    let _ = stdout.flush();
                })
                .await
        }
    };
    let input = async {
        while let Some(data) = rx.recv().await {
            agent.send_input(&args.id, &data).await?;
        }
        Ok::<_, smartvm::SmartVmError>(())
    };
    tokio::select! {
        ended = output => ended?,
        typed = input => typed?,
    }
    eprintln!("detached from {}; it keeps running", args.id);
    Ok(Exit::Success)
}
