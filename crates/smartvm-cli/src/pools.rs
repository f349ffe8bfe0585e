//! `smartvm pool create|ls|rm` and `run --pool`: warm pools held by the host agent. A pool
//! keeps VMs ready (cold: Firecracker spawned with its API up; template: restored paused from a
//! snapshot bundle) so that a `run --pool` starts one without a cold start.

use std::io::Write;
use std::path::PathBuf;

use smartvm::agent::wire::PoolRequest;
use smartvm::{probe, SmartVmError, SmartVmOptions, VmConfig};

use crate::exit::{CliError, Exit};
use crate::vms::client;

#[derive(Debug, clap::Subcommand)]
pub enum PoolCommand {
    /// Create a pool in the agent; it fills in the background and outlives agent restarts.
    Create(CreateArgs),
    /// List the agent's pools: ready, being made, handed out, misses.
    Ls {
        /// One JSON array of the pools' stats.
        #[arg(long)]
        json: bool,
    },
    /// Remove a pool: the VMs waiting in it are destroyed; those checked out keep running.
    Rm {
        /// The pool's name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Its name (letters, digits, `-`, `_`); its VMs are `<name>-<12 hex digits>`.
    name: String,
    /// How many VMs wait ready.
    #[arg(long, default_value_t = 4)]
    size: usize,
    /// How many VMs are made at once while it refills (its CPU budget).
    #[arg(long)]
    refill_concurrency: Option<usize>,
    /// A template pool of this snapshot bundle: VMs restored paused, resumed at checkout.
    #[arg(long, conflicts_with_all = ["config", "kernel", "boot_args", "vcpus", "mem"])]
    template: Option<PathBuf>,
    /// Send the config to each waiting Firecracker ahead (drives staged, TAPs made): a checkout
    /// only starts the instance, and `run --pool` takes the pool's config and no other.
    #[arg(long, conflicts_with = "template")]
    preconfigured: bool,
    /// A cold pool's VM config (camelCase JSON, without an id); default: the probe guest.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(flatten)]
    machine: crate::run_flags::MachineArgs,
    /// Print the pool's stats as JSON instead of its name.
    #[arg(long)]
    json: bool,
}

pub async fn pool(command: PoolCommand) -> Result<Exit, CliError> {
    match command {
        PoolCommand::Create(args) => create(args).await,
        PoolCommand::Ls { json } => list(json).await,
        PoolCommand::Rm { name } => {
            client().remove_pool(&name).await?;
            println!("{name}");
            Ok(Exit::Success)
        }
    }
}

fn absolute(path: &std::path::Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|e| CliError::new(Exit::Usage, format!("{}: {e}", path.display())))
}

/// A cold pool's config: the file (paths relative to it), else the probe guest (installed only
/// once the rest is known valid), with the flags over it.
fn cold_config(args: &CreateArgs, options: &SmartVmOptions) -> Result<VmConfig, CliError> {
    let mut config = match &args.config {
        Some(path) => crate::config_file::config_from_file(path)?,
        None => VmConfig::new(probe::probe_kernel_path(&options.data_dir.join("kernels")))
            .with_boot_args("console=ttyS0")
            .with_machine(1, 16),
    };
    if let Some(kernel) = &args.machine.kernel {
        config.boot_source.kernel_image_path = absolute(kernel)?;
    }
    args.machine.apply(&mut config);
    Ok(config)
}

async fn create(args: CreateArgs) -> Result<Exit, CliError> {
    let agent = client();
    agent.info().await?; // nothing is written without an agent
    let mut request = PoolRequest {
        name: args.name.clone(),
        size: args.size,
        refill_concurrency: args.refill_concurrency,
        config: None,
        template: None,
        preconfigured: args.preconfigured,
    };
    match &args.template {
        Some(dir) => request.template = Some(absolute(dir)?),
        None => {
            let options = SmartVmOptions::from_env();
            let config = cold_config(&args, &options)?;
            crate::config_file::install_probe_if_used(&config, &options)?;
            request.config = Some(config);
        }
    }
    let stats = agent.create_pool(&request).await?;
    match args.json {
        true => print_json(&stats)?,
        false => println!("{}", stats.name),
    }
    Ok(Exit::Success)
}

async fn list(json: bool) -> Result<Exit, CliError> {
    let pools = client().pools().await?;
    if json {
        return print_json(&pools).map(|()| Exit::Success);
    }
    println!(
        "{:<20} {:<9} {:>5} {:>6} {:>8} {:>11} {:>7} {:>10}",
        "NAME", "KIND", "SIZE", "READY", "WARMING", "HANDED OUT", "MISSES", "DISCARDED"
    );
    for p in &pools {
        println!(
            "{:<20} {:<9} {:>5} {:>6} {:>8} {:>11} {:>7} {:>10}",
            p.name, p.kind, p.size, p.ready, p.warming, p.handed_out, p.misses, p.discarded
        );
    }
    Ok(Exit::Success)
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::new(Exit::Failure, e))?;
    println!("{text}");
    Ok(())
}

/// `run --pool NAME`: a VM checked out of the agent's pool (a cold pool's booted with `config`
/// when given). With `detach`, its id (or summary) is printed and it keeps running; otherwise
/// its console streams to stdout until it ends (or Ctrl-C stops it), and it is removed.
pub async fn run(name: &str, config: Option<&VmConfig>, detach: bool, json: bool) -> Result<Exit, CliError> {
    let agent = client();
    let vm = agent.checkout(name, config).await?;
    if detach {
        match json {
            true => print_json(&vm)?,
            false => println!("{}", vm.id),
        }
        return Ok(Exit::Success);
    }
    crate::exit::notice(format_args!("smartvm: started VM {} from pool {name}", vm.id));
    let mut stdout = std::io::stdout();
    let followed = agent.follow_logs(&vm.id, |chunk| {
        let _ = stdout.write_all(chunk);
        let _ = stdout.flush();
    });
    use tokio::signal::unix::{signal, SignalKind};
    let failed = |e: std::io::Error| CliError::new(Exit::Failure, e);
    let (mut interrupt, mut terminate) =
        (signal(SignalKind::interrupt()).map_err(failed)?, signal(SignalKind::terminate()).map_err(failed)?);
    let interrupted = tokio::select! {
        ended = followed => { ended?; false }
        _ = interrupt.recv() => true,
        _ = terminate.recv() => true,
    };
    let ended = agent.get(&vm.id).await?;
    agent.remove(&vm.id, true).await?;
    if interrupted {
        crate::exit::notice(format_args!("smartvm: VM {} interrupted; removed", vm.id));
        return Ok(Exit::Interrupted);
    }
    let how = ended.exit.map_or_else(|| "its console ended".into(), crate::exit::describe);
    crate::exit::notice(format_args!("smartvm: VM {} exited ({how}); removed", vm.id));
    match ended.exit {
        Some(exit) if !exit.success() => {
            Err(CliError::new(Exit::GuestFailed, SmartVmError::from(smartvm::process::ProcessError::Ended { exit })))
        }
        _ => Ok(Exit::Success),
    }
}
