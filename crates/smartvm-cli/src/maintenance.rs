//! `smartvm gc` and `smartvm version`.

use serde_json::json;

use crate::exit::{CliError, Exit};

fn print_json(value: &serde_json::Value) -> Result<Exit, CliError> {
    println!("{}", serde_json::to_string_pretty(value).map_err(|e| CliError::new(Exit::Failure, e))?);
    Ok(Exit::Success)
}

pub async fn gc(as_json: bool) -> Result<Exit, CliError> {
    let smartvm = smartvm::SmartVm::new(smartvm::SmartVmOptions::from_env());
    let report = smartvm.reclaim().await?;
    if as_json {
        let rejected: Vec<_> =
            report.rejected.iter().map(|r| json!({"path": r.path, "reason": r.reason.to_string()})).collect();
        return print_json(&json!({
            "reclaimed": report.reclaimed,
            "rejected": rejected,
            "failures": report.failures.iter().map(|f| format!("{f}: {}", f.error)).collect::<Vec<_>>(),
            "network": report.network,
            "partialDownloads": report.partial_downloads,
            "networkFailures": report.network_failures.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        }));
    }
    for id in &report.reclaimed {
        println!("{id}");
    }
    for rejected in &report.rejected {
        eprintln!("warning: {rejected}: {}", rejected.reason);
    }
    for failure in &report.failures {
        eprintln!("warning: {failure}: {}", failure.error);
    }
    for removed in &report.network {
        eprintln!("removed {removed}");
    }
    for removed in &report.partial_downloads {
        eprintln!("removed the partial download {}", removed.display());
    }
    for failure in &report.network_failures {
        eprintln!("warning: {failure}");
    }
    if report.is_empty() {
        eprintln!("nothing to reclaim");
    }
    Ok(Exit::Success)
}

pub fn version(as_json: bool) -> Result<Exit, CliError> {
    let smartvm = smartvm::SmartVm::new(smartvm::SmartVmOptions::from_env());
    let found = smartvm.find_binary().ok().map(|bin| (smartvm.binary_version(&bin).map(|v| v.to_string()), bin));
    if as_json {
        let firecracker = found.map(|(v, path)| json!({"version": v, "path": path}));
        return print_json(&json!({"smartvm": env!("CARGO_PKG_VERSION"), "firecracker": firecracker}));
    }
    println!("smartvm {}", env!("CARGO_PKG_VERSION"));
    match found {
        Some((v, bin)) => println!("firecracker {} ({})", v.unwrap_or_else(|| "unknown".into()), bin.display()),
        None => println!("firecracker not found (run `smartvm binary ensure`)"),
    }
    Ok(Exit::Success)
}
