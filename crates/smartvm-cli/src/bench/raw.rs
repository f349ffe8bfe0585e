//! The raw floor: Firecracker run by hand, as a user without smartvm would (`--no-api
//! --config-file` boots, or with `--api-sock` as well for the floor of a VM whose API stays up;
//! `--api-sock` + one `PUT /snapshot/load` restores).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use smartvm::api::{ApiClient, PutSnapshotLoad};
use smartvm::config::SnapshotLoadParams;
use smartvm::{probe, FirecrackerVersion};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::bench_error;
use crate::exit::CliError;

/// Reads `child`'s stdout to its end: when the first line with `prefix` came.
async fn first_line(child: &mut tokio::process::Child, prefix: &str) -> Option<Instant> {
    let stdout = child.stdout.take()?;
    let mut lines = BufReader::new(stdout).lines();
    let mut first = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if first.is_none() && line.starts_with(prefix) {
            first = Some(Instant::now());
        }
    }
    first
}

/// How a raw boot runs Firecracker.
#[derive(Debug, Clone, Copy)]
pub enum Flavor<'a> {
    /// `--no-api --config-file`, log at Warning (nothing on success): the floor.
    NoApi,
    /// `--api-sock --config-file --id`, log at Info to a drained stderr pipe: Firecracker run the
    /// way smartvm runs it, so that the API stays up after boot and the boot is confirmed.
    Api { socket: &'a Path },
}

/// One raw boot: when the first probe line and the exit were seen.
pub async fn boot(binary: &Path, config_file: &Path, flavor: Flavor<'_>) -> Result<(Instant, Instant), CliError> {
    let mut command = tokio::process::Command::new(binary);
    match flavor {
        Flavor::NoApi => command.args(["--no-api", "--level", "Warning"]).stderr(Stdio::null()),
        Flavor::Api { socket } => {
            let _ = std::fs::remove_file(socket);
            command.arg("--api-sock").arg(socket).args(["--id", "raw", "--level", "Info"]).stderr(Stdio::piped())
        }
    };
    let mut child = command
        .args(["--log-path", "/dev/stderr", "--config-file"])
        .arg(config_file)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| bench_error("spawn firecracker", e))?;
    let drain = child.stderr.take().map(|stderr| {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        })
    });
    let first = first_line(&mut child, probe::LINE_PREFIX).await;
    child.wait().await.map_err(|e| bench_error("wait firecracker", e))?;
    let exit = Instant::now();
    if let (Some(drain), Flavor::Api { socket }) = (drain, flavor) {
        let _ = drain.await;
        let _ = std::fs::remove_file(socket);
    }
    Ok((first.ok_or_else(|| bench_error("raw boot", "probe printed nothing"))?, exit))
}

/// One raw restore: spawn with an API socket, `PUT /snapshot/load` (resume); when the load
/// returned (or, with `first_line`, when the resumed guest's first count line was seen), and
/// the still running VM (killed on drop), so that clones stay alive until all are measured, as
/// smartvm's do.
pub async fn restore(
    binary: &Path,
    socket: &Path,
    load: &SnapshotLoadParams,
    version: FirecrackerVersion,
    first_line: bool,
) -> Result<(Instant, tokio::process::Child), CliError> {
    let mut child = tokio::process::Command::new(binary)
        .args(["--level", "Warning", "--log-path", "/dev/stderr", "--api-sock"])
        .arg(socket)
        .stdout(if first_line { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| bench_error("spawn firecracker", e))?;
    let api = ApiClient::new(socket);
    api.wait_ready(Duration::from_secs(5)).await.map_err(|e| bench_error("raw restore socket", e))?;
    let payload = load.payload(version).map_err(|e| bench_error("raw restore", e))?;
    api.send(&PutSnapshotLoad(payload)).await.map_err(|e| bench_error("raw snapshot load", e))?;
    if !first_line {
        let _ = std::fs::remove_file(socket);
        return Ok((Instant::now(), child));
    }
    let stdout = child.stdout.take().ok_or_else(|| bench_error("raw restore", "no stdout"))?;
    let mut stdout = BufReader::new(stdout).lines();
    let seen = loop {
        match stdout.next_line().await {
            Ok(Some(l)) if l.starts_with("smartvm-probe count n=") => break Some(Instant::now()),
            Ok(Some(_)) => {}
            _ => break None,
        }
    };
    // Keep draining so a chatty guest never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    let _ = std::fs::remove_file(socket);
    let seen = seen.ok_or_else(|| bench_error("raw restore", "restored guest printed nothing"))?;
    Ok((seen, child))
}
