//! From an OCI bundle's `config.json` to what the VM needs (pure): the guest, its command line,
//! vCPUs and memory. The mapping, documented in the README:
//! - `annotations["io.smartvm.guest"] = "probe"`: the built-in probe guest (a test stand-in: the
//!   process args are appended to its command line, its console is the task's stdout, its
//!   `probe.exit=N` is the task's exit status);
//! - `io.smartvm.kernel`, `io.smartvm.boot_args`: a Linux kernel and its command line;
//! - `io.smartvm.init`: `agent` (the default for a kernel) boots the guest agent as init and runs
//!   the OCI process through it (its streams are the task's, its exit the task's); `console`
//!   (the probe's default) boots the guest as it is, its console the task's stdout. The probe
//!   with `agent` serves its built-in programs as the process (see `probe/vsock.rs`);
//! - vCPUs: `io.smartvm.vcpus`, else `linux.resources.cpu.quota / period` rounded up, else 1;
//! - memory: `io.smartvm.mem_mib`, else `linux.resources.memory.limit` in MiB, else 128.

mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use smartvm::guest::protocol::{ExecRequest, DEFAULT_VSOCK_PORT};
use smartvm::images::GUEST_AGENT_PATH;

pub use process::exec_request;
use process::Process;

/// Annotation prefix of smartvm's own keys.
pub const PREFIX: &str = "io.smartvm.";
/// The most vCPUs and MiB a task may ask for (Firecracker's own limits: 32 vCPUs).
const MAX_VCPUS: u64 = 32;
const MAX_MEM_MIB: u64 = 256 * 1024;

/// What runs in the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guest {
    /// The built-in probe guest (the test stand-in).
    Probe,
    /// A Linux kernel.
    Kernel(PathBuf),
}

/// What the guest runs first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// The guest as it boots; its console is the task's stdout.
    Console,
    /// The guest agent as init, running this process (the task's own).
    Agent(ExecRequest),
}

/// The VM a task becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlan {
    /// The guest.
    pub guest: Guest,
    /// What it runs first.
    pub init: Init,
    /// The kernel command line (for the probe: the process args appended).
    pub boot_args: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub mem_mib: u32,
}

/// A bundle that cannot become a VM.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// `config.json` is not an OCI runtime spec.
    #[error("config.json: {0}")]
    Parse(String),
    /// An `io.smartvm.*` annotation smartvm does not know.
    #[error("unknown annotation {0:?} (known: io.smartvm.guest, .kernel, .boot_args, .init, .vcpus, .mem_mib)")]
    UnknownAnnotation(String),
    /// An annotation or resource with a value that cannot work.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which.
        field: String,
        /// Why.
        reason: String,
    },
    /// Neither the probe nor a kernel.
    #[error("no guest: set io.smartvm.guest=probe or io.smartvm.kernel=/path/to/vmlinux")]
    NoGuest,
}

#[derive(Debug, Default, Deserialize)]
struct Spec {
    #[serde(default)]
    process: Option<Process>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Debug, Default, Deserialize)]
struct Linux {
    #[serde(default)]
    resources: Option<Resources>,
}

#[derive(Debug, Default, Deserialize)]
struct Resources {
    #[serde(default)]
    memory: Option<Memory>,
    #[serde(default)]
    cpu: Option<Cpu>,
}

#[derive(Debug, Default, Deserialize)]
struct Memory {
    limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct Cpu {
    quota: Option<i64>,
    period: Option<u64>,
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid { field: field.into(), reason: reason.into() }
}

fn number(annotations: &BTreeMap<String, String>, key: &str, max: u64) -> Result<Option<u64>, SpecError> {
    let Some(text) = annotations.get(key) else { return Ok(None) };
    match text.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(key, format!("{text:?} is not a number from 1 to {max}"))),
    }
}

/// CRI's annotation naming a container's role (`sandbox` for the pod's pause container).
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the pod sandbox a container belongs to.
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// What a bundle asks of the shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// A CRI pod sandbox (the pause container): held by the shim itself, no VM — a pause
    /// process only keeps Linux namespaces alive, which microVMs do not share.
    Sandbox,
    /// A workload: one VM.
    Vm(TaskPlan),
}

/// The shim process a task belongs to: its pod's sandbox id under CRI (one shim per pod, as
/// runc's shim groups), else the task's own id.
pub fn grouping(config_json: &str, id: &str) -> String {
    let spec: Spec = serde_json::from_str(config_json).unwrap_or_default();
    let sandbox = spec.annotations.get(CRI_SANDBOX_ID).filter(|s| !s.is_empty() && s.len() <= 128);
    sandbox.filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))).cloned().unwrap_or(id.into())
}

/// What `config.json`'s text asks for: a pod sandbox, or the VM it plans.
#[cfg(test)]
pub fn task_kind(config_json: &str) -> Result<TaskKind, SpecError> {
    task_kind_with(config_json, &BTreeMap::new())
}

/// As [`task_kind`], with the runtime's defaults (`io.smartvm.*` → value, see `options`) for
/// what the task does not annotate; a task naming its guest (probe or kernel) takes neither
/// default guest.
pub fn task_kind_with(config_json: &str, defaults: &BTreeMap<String, String>) -> Result<TaskKind, SpecError> {
    let mut spec: Spec = serde_json::from_str(config_json).map_err(|e| SpecError::Parse(e.to_string()))?;
    check_annotations(&spec)?;
    let guest_keys = ["io.smartvm.guest", "io.smartvm.kernel"];
    let own_guest = guest_keys.iter().any(|k| spec.annotations.contains_key(*k));
    for (key, value) in defaults {
        if !(own_guest && guest_keys.contains(&key.as_str())) {
            spec.annotations.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    match spec.annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) {
        Some("sandbox") => Ok(TaskKind::Sandbox),
        _ => plan_vm(spec).map(TaskKind::Vm),
    }
}

fn check_annotations(spec: &Spec) -> Result<(), SpecError> {
    let known = ["guest", "kernel", "boot_args", "init", "vcpus", "mem_mib"];
    match spec.annotations.keys().find(|k| k.strip_prefix(PREFIX).is_some_and(|rest| !known.contains(&rest))) {
        Some(unknown) => Err(SpecError::UnknownAnnotation(unknown.clone())),
        None => Ok(()),
    }
}

fn plan_vm(spec: Spec) -> Result<TaskPlan, SpecError> {
    let a = &spec.annotations;
    let guest = match (a.get("io.smartvm.guest").map(String::as_str), a.get("io.smartvm.kernel")) {
        (Some("probe"), None) => Guest::Probe,
        (Some("probe"), Some(_)) => return Err(invalid("io.smartvm.kernel", "the probe guest takes no kernel")),
        (Some(other), _) => return Err(invalid("io.smartvm.guest", format!("{other:?}: the one guest kind is probe"))),
        (None, Some(kernel)) if kernel.starts_with('/') => Guest::Kernel(PathBuf::from(kernel)),
        (None, Some(kernel)) => {
            return Err(invalid("io.smartvm.kernel", format!("{kernel:?} is not an absolute path")))
        }
        (None, None) => return Err(SpecError::NoGuest),
    };
    let resources = spec.linux.and_then(|l| l.resources).unwrap_or_default();
    let vcpus = match number(a, "io.smartvm.vcpus", MAX_VCPUS)? {
        Some(n) => n,
        None => vcpus_of(resources.cpu.as_ref())?,
    };
    let mem_mib = match number(a, "io.smartvm.mem_mib", MAX_MEM_MIB)? {
        Some(n) => n,
        None => mem_of(resources.memory.as_ref())?,
    };
    let process = spec.process.unwrap_or_default();
    let init = match (a.get("io.smartvm.init").map(String::as_str), &guest) {
        (Some("console"), _) | (None, Guest::Probe) => Init::Console,
        (Some("agent"), _) | (None, Guest::Kernel(_)) => Init::Agent(process.exec_request("process")?),
        (Some(other), _) => return Err(invalid("io.smartvm.init", format!("{other:?}: agent or console"))),
    };
    let boot_args = boot_args(&guest, &init, a.get("io.smartvm.boot_args").cloned(), process.args);
    Ok(TaskPlan { guest, init, boot_args, vcpus: vcpus as u8, mem_mib: mem_mib as u32 })
}

/// The kernel command line: the given one or the guest's default, then what the init needs —
/// the probe's console mode takes the process args, its agent mode serves the guest protocol,
/// a kernel with the agent boots it as init.
fn boot_args(guest: &Guest, init: &Init, given: Option<String>, args: Vec<String>) -> String {
    let base = given.unwrap_or_else(|| match guest {
        Guest::Probe => "console=ttyS0".into(),
        Guest::Kernel(_) => "console=ttyS0 reboot=k panic=1 pci=off".into(),
    });
    let extra = match (guest, init) {
        (Guest::Probe, Init::Console) => args,
        (Guest::Probe, Init::Agent(_)) => vec![format!("probe.vsock={DEFAULT_VSOCK_PORT}")],
        (Guest::Kernel(_), Init::Agent(_)) => {
            let init = format!("init={GUEST_AGENT_PATH}");
            if base.split_whitespace().any(|a| a == init) {
                vec![]
            } else {
                vec![init]
            }
        }
        (Guest::Kernel(_), Init::Console) => vec![],
    };
    [base].into_iter().chain(extra).collect::<Vec<_>>().join(" ")
}

fn vcpus_of(cpu: Option<&Cpu>) -> Result<u64, SpecError> {
    match cpu.map(|c| (c.quota, c.period)) {
        Some((Some(quota), Some(period))) if quota > 0 && period > 0 => {
            let vcpus = (quota as u64).div_ceil(period);
            if vcpus > MAX_VCPUS {
                return Err(invalid("linux.resources.cpu", format!("{vcpus} CPUs; at most {MAX_VCPUS}")));
            }
            Ok(vcpus.max(1))
        }
        _ => Ok(1),
    }
}

fn mem_of(memory: Option<&Memory>) -> Result<u64, SpecError> {
    match memory.and_then(|m| m.limit) {
        Some(limit) if limit > 0 => {
            let mib = (limit as u64).div_ceil(1 << 20);
            if mib > MAX_MEM_MIB {
                return Err(invalid("linux.resources.memory.limit", format!("{mib} MiB; at most {MAX_MEM_MIB}")));
            }
            Ok(mib.max(16))
        }
        _ => Ok(128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(config_json: &str) -> Result<TaskPlan, SpecError> {
        match task_kind(config_json)? {
            TaskKind::Vm(plan) => Ok(plan),
            TaskKind::Sandbox => panic!("not a sandbox"),
        }
    }

    fn spec(annotations: serde_json::Value, resources: serde_json::Value) -> String {
        json!({"ociVersion": "1.0.2", "process": {"args": ["probe.lines=3", "probe.exit=3"]},
               "annotations": annotations, "linux": {"resources": resources}})
        .to_string()
    }

    #[test]
    fn the_probe_stand_in_takes_the_process_args_and_resources_map_to_the_machine() {
        let p = plan(&spec(json!({"io.smartvm.guest": "probe"}), json!({}))).unwrap();
        assert_eq!(p.guest, Guest::Probe);
        assert_eq!(p.boot_args, "console=ttyS0 probe.lines=3 probe.exit=3");
        assert_eq!((p.vcpus, p.mem_mib), (1, 128));
        let sized = spec(
            json!({"io.smartvm.guest": "probe"}),
            json!({"cpu": {"quota": 150000, "period": 100000}, "memory": {"limit": 268435456}}),
        );
        let p = plan(&sized).unwrap();
        assert_eq!((p.vcpus, p.mem_mib), (2, 256), "1.5 CPUs round up; 256 MiB");
        let annotated = spec(
            json!({"io.smartvm.guest": "probe", "io.smartvm.vcpus": "4", "io.smartvm.mem_mib": "64"}),
            json!({"cpu": {"quota": 100000, "period": 100000}}),
        );
        assert_eq!((plan(&annotated).unwrap().vcpus, plan(&annotated).unwrap().mem_mib), (4, 64));
    }

    #[test]
    fn the_init_mode_decides_the_command_line_and_who_runs_the_process() {
        let probe_agent = plan(&spec(json!({"io.smartvm.guest": "probe", "io.smartvm.init": "agent"}), json!({})));
        let probe_agent = probe_agent.unwrap();
        assert_eq!(probe_agent.boot_args, format!("console=ttyS0 probe.vsock={DEFAULT_VSOCK_PORT}"));
        assert!(matches!(&probe_agent.init, Init::Agent(r) if r.argv == ["probe.lines=3", "probe.exit=3"]));
        let kernel = plan(&spec(json!({"io.smartvm.kernel": "/k/vmlinux"}), json!({}))).unwrap();
        assert_eq!(kernel.boot_args, "console=ttyS0 reboot=k panic=1 pci=off init=/sbin/smartvm-guest");
        assert!(matches!(kernel.init, Init::Agent(_)), "a kernel's default is the agent");
        let given = json!({"io.smartvm.kernel": "/k/vmlinux", "io.smartvm.boot_args": "console=ttyS0 init=/sbin/smartvm-guest"});
        assert_eq!(plan(&spec(given, json!({}))).unwrap().boot_args, "console=ttyS0 init=/sbin/smartvm-guest");
        let own = plan(&spec(json!({"io.smartvm.kernel": "/k/vmlinux", "io.smartvm.init": "console"}), json!({})));
        assert_eq!(own.unwrap().init, Init::Console, "the image's own init, the process not run");
        let bad = plan(&spec(json!({"io.smartvm.guest": "probe", "io.smartvm.init": "systemd"}), json!({})));
        assert!(matches!(bad, Err(SpecError::Invalid { field, .. }) if field == "io.smartvm.init"));
        let nothing = json!({"ociVersion": "1.0.2", "process": {"args": []},
                             "annotations": {"io.smartvm.kernel": "/k/vmlinux"}});
        assert!(matches!(plan(&nothing.to_string()), Err(SpecError::Invalid { field, .. }) if field == "process.args"));
    }

    #[test]
    fn runtime_defaults_fill_in_what_the_task_does_not_say() {
        let defaults: BTreeMap<String, String> =
            [("io.smartvm.kernel", "/k/vmlinux"), ("io.smartvm.vcpus", "2"), ("io.smartvm.mem_mib", "512")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let plain = json!({"process": {"args": ["/app"]}}).to_string();
        let TaskKind::Vm(p) = task_kind_with(&plain, &defaults).unwrap() else { panic!("a VM") };
        assert_eq!((p.guest, p.vcpus, p.mem_mib), (Guest::Kernel("/k/vmlinux".into()), 2, 512));
        let own = spec(json!({"io.smartvm.guest": "probe", "io.smartvm.mem_mib": "64"}), json!({}));
        let TaskKind::Vm(p) = task_kind_with(&own, &defaults).unwrap() else { panic!("a VM") };
        assert_eq!((p.guest, p.vcpus, p.mem_mib), (Guest::Probe, 2, 64), "the task's own guest and memory win");
    }

    #[test]
    fn bad_bundles_are_refused_with_their_field() {
        let err = |a, r| plan(&spec(a, r)).unwrap_err();
        assert_eq!(err(json!({}), json!({})), SpecError::NoGuest);
        assert!(
            matches!(err(json!({"io.smartvm.guest": "probe", "io.smartvm.color": "red"}), json!({})), SpecError::UnknownAnnotation(k) if k == "io.smartvm.color")
        );
        assert!(
            matches!(err(json!({"io.smartvm.guest": "probe", "io.smartvm.vcpus": "999"}), json!({})), SpecError::Invalid { field, .. } if field == "io.smartvm.vcpus")
        );
        assert!(
            matches!(err(json!({"io.smartvm.guest": "probe"}), json!({"memory": {"limit": 1i64 << 62}})), SpecError::Invalid { field, .. } if field == "linux.resources.memory.limit")
        );
        assert!(
            matches!(err(json!({"io.smartvm.kernel": "vmlinux"}), json!({})), SpecError::Invalid { field, .. } if field == "io.smartvm.kernel")
        );
        assert!(matches!(plan("{not json"), Err(SpecError::Parse(_))));
        // Other runtimes' annotations are not smartvm's business.
        assert!(plan(&spec(
            json!({"io.smartvm.guest": "probe", "io.kubernetes.cri.container-type": "container"}),
            json!({})
        ))
        .is_ok());
    }

    #[test]
    fn a_cri_pod_sandbox_needs_no_guest_and_groups_its_containers() {
        let sandbox = spec(json!({"io.kubernetes.cri.container-type": "sandbox"}), json!({}));
        assert_eq!(task_kind(&sandbox).unwrap(), TaskKind::Sandbox);
        let bad = spec(json!({"io.kubernetes.cri.container-type": "sandbox", "io.smartvm.x": "1"}), json!({}));
        assert!(matches!(task_kind(&bad), Err(SpecError::UnknownAnnotation(_))));
        let container = spec(
            json!({"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "abc123",
                   "io.smartvm.guest": "probe"}),
            json!({}),
        );
        assert!(matches!(task_kind(&container), Ok(TaskKind::Vm(_))));
        assert_eq!(grouping(&container, "c1"), "abc123");
        assert_eq!(grouping(&spec(json!({}), json!({})), "c1"), "c1", "ctr's tasks: one shim each");
        let hostile = spec(json!({"io.kubernetes.cri.sandbox-id": "../../x"}), json!({}));
        assert_eq!(grouping(&hostile, "c1"), "c1", "a grouping id names a socket: no paths");
    }
}
