//! `smartvm binary …` and `smartvm image …`.

use std::path::PathBuf;

use clap::Subcommand;
use smartvm::images::{BaseImageBundle, BaseImageOptions, Preset};
use smartvm::{SmartVm, SmartVmOptions};

use crate::exit::{CliError, Exit};

#[derive(Debug, Subcommand)]
pub enum BinaryCommand {
    /// Find the Firecracker binary, downloading it if needed; prints its path.
    Ensure {
        /// Version to install (default: the configured one, else the latest release).
        #[arg(long)]
        version: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Resolve, download and cache a base-image bundle; prints a summary (`--json`: the bundle).
    Pull {
        #[command(flatten)]
        source: SourceArgs,
        /// The bundle as JSON (bundleId, preset, paths, sizes, SHA-256s, bootArgs, …).
        #[arg(long)]
        json: bool,
    },
    /// List cached bundles.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Install the guest agent (`smartvm-guest`, static) at /sbin/smartvm-guest in an ext4
    /// rootfs image, without mounting it (debugfs); boot it with `init=/sbin/smartvm-guest`.
    InjectAgent {
        /// The ext4 image (not in use while this runs).
        rootfs: PathBuf,
        /// The agent binary (default: `smartvm-guest` beside this program; build it static
        /// with scripts/build-guest.sh).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// `{"rootfs", "path", "size"}`.
        #[arg(long)]
        json: bool,
    },
    /// Evict least recently used bundles beyond N (default: the configured limit).
    Prune {
        /// Bundles to keep (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keep: Option<u64>,
        /// `{"evicted": [ids]}` instead of one id per line.
        #[arg(long)]
        json: bool,
    },
}

/// Where a base image comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// latest, lts or hosted.
    #[arg(long)]
    pub preset: Option<Preset>,
    /// Hosted manifest (path or http(s) URL); implies --preset hosted (as SMARTVM_BASE_IMAGE_MANIFEST_URL/_PATH do).
    #[arg(long)]
    pub manifest: Option<String>,
    /// Download again even if a verified copy is cached.
    #[arg(long)]
    pub force: bool,
}

impl SourceArgs {
    pub fn is_set(&self) -> bool {
        self.preset.is_some() || self.manifest.is_some()
    }

    pub fn options(&self) -> BaseImageOptions {
        let mut o = BaseImageOptions { preset: self.preset, force_download: self.force, ..Default::default() };
        if let Some(m) = &self.manifest {
            if m.starts_with("http://") || m.starts_with("https://") {
                o.manifest_url = Some(m.clone());
            } else {
                o.manifest_path = Some(PathBuf::from(m));
            }
        }
        o
    }
}

pub async fn pull(smartvm: &SmartVm, source: &SourceArgs) -> Result<BaseImageBundle, CliError> {
    let o = smartvm.options();
    let env_manifest = o.base_image_manifest_url.is_some() || o.base_image_manifest_path.is_some();
    if source.preset == Some(Preset::Hosted) && source.manifest.is_none() && !env_manifest {
        let why = "--preset hosted needs --manifest PATH|URL (or SMARTVM_BASE_IMAGE_MANIFEST_URL/_PATH)";
        return Err(CliError::new(Exit::Usage, why));
    }
    let progress = crate::progress::for_terminal();
    Ok(smartvm.ensure_base_image(&source.options(), progress.as_ref()).await?)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value).map_err(|e| CliError::new(Exit::Failure, e))
}

pub async fn binary(cmd: BinaryCommand) -> Result<Exit, CliError> {
    let BinaryCommand::Ensure { version } = cmd;
    let mut options = SmartVmOptions::from_env();
    if let Some(v) = version {
        let parsed = v.parse().map_err(|e| CliError::new(Exit::Usage, e))?;
        options.firecracker_version = Some(parsed);
    }
    let smartvm = SmartVm::new(options);
    let progress = crate::progress::for_terminal();
    println!("{}", smartvm.ensure_binary(progress.as_ref()).await?.display());
    Ok(Exit::Success)
}

pub async fn image(cmd: ImageCommand) -> Result<Exit, CliError> {
    let smartvm = SmartVm::new(SmartVmOptions::from_env());
    match cmd {
        ImageCommand::Pull { source, json: as_json } => {
            let bundle = pull(&smartvm, &source).await?;
            if as_json {
                println!("{}", json(&bundle)?);
            } else {
                println!(
                    "{} ({}, Firecracker {})\n  kernel {}\n  rootfs {}{}",
                    bundle.bundle_id,
                    bundle.preset,
                    bundle.firecracker_version,
                    bundle.kernel_image_path.display(),
                    bundle.rootfs_path.display(),
                    if bundle.rootfs_is_read_only { " (read-only)" } else { "" }
                );
            }
        }
        ImageCommand::Ls { json: as_json } => {
            let bundles = smartvm.base_image_manager()?.list().map_err(smartvm::SmartVmError::from)?;
            if as_json {
                println!("{}", json(&bundles)?);
            } else if bundles.is_empty() {
                eprintln!("no base images (see `smartvm image pull`)");
            } else {
                println!("{:<48} {:<7} {:<9} {:>13}  FIRECRACKER", "BUNDLE", "PRESET", "ROOTFS", "SIZE");
                for b in bundles {
                    let size = (b.kernel_size_bytes + b.rootfs_size_bytes) as f64 / (1 << 20) as f64;
                    println!(
                        "{:<48} {:<7} {:<9} {:>9.1} MiB  {}",
                        b.bundle_id, b.preset, b.rootfs_type, size, b.firecracker_version
                    );
                }
            }
        }
        ImageCommand::InjectAgent { rootfs, agent, json: as_json } => inject_agent(&rootfs, agent, as_json)?,
        ImageCommand::Prune { keep, json: as_json } => {
            let manager = smartvm.base_image_manager()?;
            let evicted = match keep {
                Some(n) => manager.prune_to(n as usize, None),
                None => manager.prune(None),
            }
            .map_err(smartvm::SmartVmError::from)?;
            if as_json {
                println!("{}", json(&serde_json::json!({ "evicted": evicted }))?);
            } else if evicted.is_empty() {
                eprintln!("nothing to evict");
            } else {
                for id in evicted {
                    println!("{id}");
                }
            }
        }
    }
    Ok(Exit::Success)
}

/// `image inject-agent`: the agent must be a file only root (or this user) could have written.
fn inject_agent(rootfs: &std::path::Path, agent: Option<PathBuf>, as_json: bool) -> Result<(), CliError> {
    let agent = match agent {
        Some(agent) => agent,
        None => std::env::current_exe()
            .map(|exe| exe.with_file_name("smartvm-guest"))
            .map_err(|e| CliError::new(Exit::Failure, e))?,
    };
    smartvm::trust::check(&agent, smartvm::trust::Expect::Executable).map_err(smartvm::SmartVmError::from)?;
    let report = smartvm::images::inject_guest_agent(rootfs, &agent).map_err(smartvm::SmartVmError::from)?;
    if as_json {
        let value = serde_json::json!({ "rootfs": report.rootfs, "path": report.path, "size": report.size });
        println!("{}", json(&value)?);
    } else {
        println!("{}:{} ({} bytes)", report.rootfs.display(), report.path, report.size);
    }
    Ok(())
}
