//! `smartvm doctor`: what this host can do, and what to fix.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use smartvm::{probe, SmartVm, SmartVmOptions, VmConfig};

use crate::exit::{CliError, Exit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check { name, status, detail: detail.into() }
}

/// Which KVM this is, from the loaded modules and CPU flags.
fn classify_kvm(modules: &[&str], cpu_flags: &str) -> &'static str {
    let has = |m: &str| modules.contains(&m);
    if has("kvm_pvm") {
        "paravirtual (kvm_pvm): guest ring 0 is emulated; Linux guests may not boot, the probe does"
    } else if has("kvm_intel") || has("kvm_amd") || cpu_flags.split_whitespace().any(|f| f == "vmx" || f == "svm") {
        "hardware (VMX/SVM)"
    } else {
        "unknown KVM provider"
    }
}

fn kvm_checks() -> Vec<Check> {
    let kvm = Path::new("/dev/kvm");
    if !kvm.exists() {
        return vec![check(
            "kvm",
            Status::Fail,
            "/dev/kvm is missing: load kvm_intel/kvm_amd or run on a host with virtualization",
        )];
    }
    let access = std::fs::OpenOptions::new().read(true).write(true).open(kvm);
    let modules: Vec<String> = ["kvm_pvm", "kvm_intel", "kvm_amd"]
        .iter()
        .filter(|m| Path::new("/sys/module").join(m).exists())
        .map(|m| m.to_string())
        .collect();
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("flags")).map(str::to_string))
        .unwrap_or_default();
    let refs: Vec<&str> = modules.iter().map(String::as_str).collect();
    vec![
        match access {
            Ok(_) => check("kvm", Status::Ok, "/dev/kvm is readable and writable"),
            Err(e) => check(
                "kvm",
                Status::Fail,
                format!("/dev/kvm cannot be opened read-write: {e} (add the user to group kvm)"),
            ),
        },
        {
            let kind = classify_kvm(&refs, &flags);
            check("kvm-kind", if kind.starts_with("hardware") { Status::Ok } else { Status::Warn }, kind)
        },
    ]
}

fn filesystem_checks(options: &SmartVmOptions) -> Vec<Check> {
    let dir = &options.runtime_dir;
    let probe_dir = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    match nix::sys::statfs::statfs(probe_dir) {
        Ok(fs) => {
            let tmpfs = fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC;
            let free_mib = fs.blocks_available() * fs.block_size() as u64 / (1 << 20);
            let status = if free_mib < 256 { Status::Warn } else { Status::Ok };
            vec![
                check(
                    "runtime-dir",
                    if tmpfs { Status::Ok } else { Status::Warn },
                    format!(
                        "{} ({})",
                        dir.display(),
                        if tmpfs { "tmpfs" } else { "not tmpfs: staged drives go to disk" }
                    ),
                ),
                check("runtime-free", status, format!("{free_mib} MiB free")),
            ]
        }
        Err(e) => vec![check("runtime-dir", Status::Fail, format!("cannot stat {}: {e}", probe_dir.display()))],
    }
}

/// Whether smartvm may keep state in the data and runtime dirs (owned by root or the user, not
/// writable by others, up to `/`); a dir that does not exist yet is judged by its parent.
fn trust_checks(options: &SmartVmOptions) -> Vec<Check> {
    [("data-dir", &options.data_dir), ("runtime-trust", &options.runtime_dir)]
        .into_iter()
        .map(|(name, dir)| {
            let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
            let verdict = if existing == dir.as_path() {
                smartvm::trust::check(dir, smartvm::trust::Expect::Directory).map(|()| "trusted".to_string())
            } else {
                let parent = smartvm::trust::check(existing, smartvm::trust::Expect::Directory);
                parent.map(|()| "will be created 0700".to_string()).or_else(|e| {
                    // A root-owned sticky parent (/tmp) is fine: the dir below it is created private.
                    let sticky =
                        e.problem == smartvm::trust::TrustProblem::Writable && e.owner == 0 && e.mode & 0o1000 != 0;
                    if sticky {
                        Ok("will be created 0700".to_string())
                    } else {
                        Err(e)
                    }
                })
            };
            match verdict {
                Ok(how) => check(name, Status::Ok, format!("{} ({how})", dir.display())),
                Err(e) => check(name, Status::Fail, e.to_string()),
            }
        })
        .collect()
}

fn host_checks() -> Vec<Check> {
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup v2 (unified)".to_string()
    } else {
        let v1: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        format!("cgroup v1: {}", v1.join(","))
    };
    let on_path = |tool: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    let tun = Path::new("/dev/net/tun").exists();
    let nft = on_path("nft");
    vec![
        check("cgroups", Status::Ok, cgroup),
        check(
            "tun",
            if tun { Status::Ok } else { Status::Warn },
            if tun { "/dev/net/tun present" } else { "/dev/net/tun missing: no TAP networking" },
        ),
        check(
            "nftables",
            if nft { Status::Ok } else { Status::Warn },
            if nft { "nft found" } else { "nft missing: no NAT for guests (apt-get install nftables)" },
        ),
    ]
}

async fn boot_check(smartvm: &SmartVm) -> Check {
    let kernel = match probe::install_probe_kernel(&smartvm.options().data_dir.join("kernels")) {
        Ok(k) => k,
        Err(e) => return check("probe-boot", Status::Fail, format!("cannot install the probe kernel: {e}")),
    };
    let id = format!("doctor-{}", std::process::id());
    let cfg = VmConfig::new(kernel).with_id(id).with_machine(1, 16).with_boot_args("console=ttyS0");
    let started = Instant::now();
    let result = async {
        let vm = smartvm.create_vm(&cfg)?;
        vm.start().await?;
        let console = vm.console();
        let done = console.wait_for_line(Duration::from_secs(10), |l| l == "smartvm-probe done").await;
        Ok::<_, smartvm::SmartVmError>(done.map(|_| started.elapsed()))
    }
    .await;
    let _ = smartvm.cleanup().await;
    match result {
        Ok(Some(t)) => {
            check("probe-boot", Status::Ok, format!("probe booted and reported in {:.1} ms", t.as_secs_f64() * 1e3))
        }
        Ok(None) => check("probe-boot", Status::Fail, "probe started but did not report within 10 s"),
        Err(e) => check("probe-boot", Status::Fail, format!("{} ({})", e, e.root())),
    }
}

pub async fn doctor(json: bool) -> Result<Exit, CliError> {
    let options = SmartVmOptions::from_env();
    let smartvm = SmartVm::new(options.clone());
    let mut checks = kvm_checks();
    let binary = smartvm.find_binary();
    match &binary {
        Ok(bin) => {
            let version = smartvm.binary_version(bin).map_or_else(|| "unknown".into(), |v| v.to_string());
            checks.push(check("firecracker", Status::Ok, format!("{version} at {}", bin.display())));
        }
        Err(e) => checks.push(check("firecracker", Status::Fail, e.to_string())),
    }
    checks.extend(filesystem_checks(&options));
    checks.extend(trust_checks(&options));
    checks.extend(host_checks());
    let can_boot = binary.is_ok() && !checks.iter().any(|c| c.name == "kvm" && c.status == Status::Fail);
    if can_boot {
        checks.push(boot_check(&smartvm).await);
    } else {
        checks.push(check("probe-boot", Status::Fail, "skipped: fix the failures above first"));
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if json {
        let doc = serde_json::json!({ "ok": !failed, "checks": checks });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| CliError::new(Exit::Failure, e))?);
    } else {
        for c in &checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("[{mark}] {:<13} {}", c.name, c.detail);
        }
    }
    Ok(if failed { Exit::HostUnfit } else { Exit::Success })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_kinds() {
        assert!(classify_kvm(&["kvm_pvm"], "fpu sse").starts_with("paravirtual"));
        assert!(classify_kvm(&["kvm_amd"], "").starts_with("hardware"));
        assert!(classify_kvm(&[], "fpu vmx sse").starts_with("hardware"));
        assert_eq!(classify_kvm(&[], "fpu"), "unknown KVM provider");
    }
}
