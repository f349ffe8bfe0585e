//! Fault injection against the real binary: `smartvm run` SIGKILLs itself at every step
//! boundary of a start (direct, with `--net` in a test namespace, and jailed); `smartvm gc`
//! must then leave nothing behind. The table (step → leftovers before/after gc) is printed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{env, in_netns, Env};
use smartvm::vm::BootPath;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Direct,
    /// Direct, configured through API requests (`SMARTVM_BOOT_VIA_API=1`).
    DirectApi,
    Net,
    Jailed,
}

/// A namespace with an uplink (default route), deleted on drop.
struct Namespace(String);

impl Namespace {
    fn create(tag: &str) -> Self {
        let name = format!("svt-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
        let _ = Command::new("ip").args(["netns", "delete", &name]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &name]);
        let ns = Namespace(name);
        let n = ns.0.as_str();
        ip(&["-n", n, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p"]);
        ip(&["-n", n, "link", "set", "uplink0", "up"]);
        ip(&["-n", n, "addr", "add", "192.0.2.10/24", "dev", "uplink0"]);
        ip(&["-n", n, "route", "add", "default", "dev", "uplink0"]);
        ns
    }

    /// Links named `sv…` (smartvm's TAPs and bridge) and smartvm nftables tables.
    fn smartvm_objects(&self) -> Vec<String> {
        let links = Command::new("ip").args(["-n", &self.0, "-o", "link", "show"]).output().unwrap();
        let mut found: Vec<String> = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_string()))
            .filter(|n| n.starts_with("sv"))
            .collect();
        let tables = Command::new("ip").args(["netns", "exec", &self.0, "nft", "list", "tables"]).output().unwrap();
        found.extend(
            String::from_utf8_lossy(&tables.stdout).lines().filter(|l| l.contains("smartvm")).map(String::from),
        );
        found
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// Everything a VM with `id` could have left: runtime dir entries, processes, jail dir, and
/// in `ns` its TAPs, bridge and NAT table.
fn leftovers(env: &Env, id: &str, ns: Option<&Namespace>) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(env.runtime())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') || n.starts_with(".new-"))
                .map(|n| format!("dir {n}"))
                .collect()
        })
        .unwrap_or_default();
    let jail = Path::new("/srv/jailer/firecracker").join(id);
    if jail.exists() {
        left.push(format!("jail {}", jail.display()));
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let is_vm = args.windows(2).any(|w| w[0] == b"--id" && w[1] == id.as_bytes());
        let is_cli = args.first().is_some_and(|a| a.ends_with(b"smartvm"));
        if is_vm && !is_cli {
            left.push(format!("process {}", e.file_name().to_string_lossy()));
        }
    }
    left.extend(ns.map(Namespace::smartvm_objects).unwrap_or_default());
    left
}

fn run_until_killed(env: &Env, mode: Mode, id: &str, step: usize, ns: Option<&Namespace>) -> Command {
    let mut args = vec!["run", "--id", id, "--boot-args", "console=ttyS0 probe.count=1000"];
    match mode {
        Mode::Direct | Mode::DirectApi => {}
        Mode::Net => args.push("--net"),
        Mode::Jailed => args.push("--jailed"),
    }
    let mut cmd = env.cmd(&args);
    if mode == Mode::DirectApi {
        cmd.env("SMARTVM_BOOT_VIA_API", "1");
    }
    cmd.env(smartvm::vm::steps::fault_injection::ENV, step.to_string()).stdout(Stdio::null()).stderr(Stdio::null());
    match ns {
        Some(ns) => in_netns(&ns.0, cmd),
        None => cmd,
    }
}

fn kill_at_every_step(mode: Mode, tag: &str) {
    let Some(env) = env() else { return };
    if !nix::unistd::geteuid().is_root() {
        common::skipped("crash tests need root");
        return;
    }
    let ns = (mode == Mode::Net).then(|| Namespace::create(tag));
    let path = if mode == Mode::DirectApi { BootPath::Api } else { BootPath::ConfigFile };
    let steps = smartvm::vm::start_steps(path);
    let mut table =
        vec![format!("| {tag}: killed after step | leftovers before gc | after gc |"), "|---|---|---|".into()];
    let mut dirty = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let id = format!("{tag}{n}");
        let status = run_until_killed(&env, mode, &id, n, ns.as_ref()).status().unwrap();
        let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) || status.code() == Some(137);
        assert!(killed, "run was not killed after step {n} ({step:?}): {status:?}");
        let before = leftovers(&env, &id, ns.as_ref());
        let gc = match &ns {
            Some(ns) => in_netns(&ns.0, env.cmd(&["gc"])).output().unwrap(),
            None => env.cmd(&["gc"]).output().unwrap(),
        };
        assert!(gc.status.success(), "gc: {}", String::from_utf8_lossy(&gc.stderr));
        let after = leftovers(&env, &id, ns.as_ref());
        table.push(format!("| {n} {step:?} | {} | {} |", before.join(", "), after.join(", ")));
        if !after.is_empty() {
            dirty
                .push(format!("after step {n} ({step:?}): {after:?}; gc said {}", String::from_utf8_lossy(&gc.stderr)));
        }
    }
    println!("{}", table.join("\n"));
    assert!(dirty.is_empty(), "gc left things behind:\n{}\n{}", dirty.join("\n"), table.join("\n"));
}

#[test]
fn killed_at_every_step_direct_then_gc_leaves_nothing() {
    kill_at_every_step(Mode::Direct, "kd");
}

#[test]
fn killed_at_every_step_of_the_api_boot_then_gc_leaves_nothing() {
    kill_at_every_step(Mode::DirectApi, "ka");
}

#[test]
fn killed_at_every_step_with_net_then_gc_leaves_nothing() {
    kill_at_every_step(Mode::Net, "kn");
}

#[test]
fn killed_at_every_step_jailed_then_gc_leaves_nothing() {
    kill_at_every_step(Mode::Jailed, "kj");
}
