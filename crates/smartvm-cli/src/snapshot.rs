//! `smartvm snapshot take|restore`.

use std::path::PathBuf;

use clap::Subcommand;
use smartvm::snapshot::Snapshot;
use smartvm::{SmartVm, SmartVmError, SmartVmOptions};

use crate::exit::{CliError, Exit};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a running VM (started by `smartvm run` or any smartvm program using the same
    /// runtime dir) into a self-contained bundle; prints the bundle's snapshot.json.
    Take {
        /// VM id.
        id: String,
        /// Bundle directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Leave the VM paused afterwards.
        #[arg(long)]
        keep_paused: bool,
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
    },
}

pub async fn snapshot(cmd: SnapshotCommand) -> Result<Exit, CliError> {
    let smartvm = SmartVm::new(SmartVmOptions::from_env());
    match cmd {
        SnapshotCommand::Take { id, out, keep_paused } => {
            smartvm.snapshot_vm(&id, &out, keep_paused).await?;
            println!("{}", out.join(smartvm::snapshot::SNAPSHOT_FILE).display());
            Ok(Exit::Success)
        }
        SnapshotCommand::Restore { dir, id, timeout } => {
            let snapshot = Snapshot::load(&dir)?;
            let mut config = *snapshot
                .vm_config
                .clone()
                .ok_or_else(|| SmartVmError::Snapshot(format!("{} records no VM configuration", dir.display())))?;
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
