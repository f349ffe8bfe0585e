//! `smartvm snapshot take|restore`.

use std::path::PathBuf;

use clap::Subcommand;
use smartvm::snapshot::Snapshot;
use smartvm::{SmartVm, SmartVmError, SmartVmOptions};

use crate::exit::{CliError, Exit};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a running VM (held by the agent, started by `smartvm run`, or by any smartvm
    /// program using the same runtime dir) into a self-contained bundle; prints the bundle's
    /// snapshot.json. A VM the agent holds is snapshotted by the agent.
    Take {
        /// VM id.
        id: String,
        /// Bundle directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Leave the VM paused afterwards.
        #[arg(long)]
        keep_paused: bool,
        /// `{"bundle": "<dir>/snapshot.json"}` instead of the bare path.
        #[arg(long)]
        json: bool,
    },
    /// Start a new VM from a bundle and stream its console (Ctrl-C stops and cleans up).
    Restore {
        /// Bundle directory.
        dir: PathBuf,
        /// Id of the new VM (default: a UUID).
        #[arg(long)]
        id: Option<String>,
        /// Stop the VM after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Hand the new VM(s) to the agent and print their ids instead of streaming the console.
        #[arg(long, short = 'd')]
        detach: bool,
        /// With --detach: start this many clones (`<id>-<i>`).
        #[arg(long, default_value_t = 1, requires = "detach", value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
}

/// The absolute form of `path` (the agent resolves nothing against the client's directory).
fn absolute(path: &std::path::Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|e| CliError::new(Exit::Failure, e))
}

pub async fn snapshot(cmd: SnapshotCommand) -> Result<Exit, CliError> {
    let smartvm = SmartVm::new(SmartVmOptions::from_env());
    match cmd {
        SnapshotCommand::Take { id, out, keep_paused, json } => {
            let agent = crate::vms::client();
            let bundle = if agent.get(&id).await.is_ok() {
                agent.snapshot(&id, &absolute(&out)?, keep_paused).await?
            } else {
                smartvm.snapshot_vm(&id, &out, keep_paused).await?;
                out.join(smartvm::snapshot::SNAPSHOT_FILE)
            };
            match json {
                true => println!("{}", serde_json::json!({ "bundle": bundle })),
                false => println!("{}", bundle.display()),
            }
            Ok(Exit::Success)
        }
        SnapshotCommand::Restore { dir, id, detach: true, count, .. } => {
            let request = smartvm::agent::wire::RestoreRequest {
                dir: absolute(&dir)?,
                id,
                count: Some(count as usize),
                resume: Some(true),
            };
            for vm in crate::vms::client().restore(&request).await? {
                println!("{}", vm.id);
            }
            Ok(Exit::Success)
        }
        SnapshotCommand::Restore { dir, id, timeout, .. } => {
            let snapshot = Snapshot::load(&dir)?;
            let mut config = *snapshot
                .vm_config
                .clone()
                .ok_or_else(|| SmartVmError::from(smartvm::error::SnapshotError::NoConfig(dir.to_path_buf())))?;
            config.id = id;
            let vm = smartvm.create_vm(&config)?;
            let outcome = crate::run::supervise(&vm, timeout, vm.restore_snapshot(&snapshot, true, false)).await;
            let cleaned = smartvm.cleanup().await;
            let exit = outcome?;
            cleaned?;
            Ok(exit)
        }
    }
}
