//! What travels between the agent and its clients: typed requests and answers (states, steps
//! and error codes are enums, written as their stable names).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;
use crate::error::ErrorCode;
use crate::error::SmartVmError;
use crate::lifecycle::{ExitInfo, Step, VmState};
use crate::process::StopStep;

/// The agent's OpenAPI 3 document (served at `GET /openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// A VM as the agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSummary {
    /// Its id.
    pub id: String,
    /// `created`, `running`, `paused`, `stopped`, `error`, …
    pub state: VmState,
    /// Firecracker's pid while it runs.
    pub pid: Option<i32>,
    /// The API socket.
    pub socket: PathBuf,
    /// vCPUs and memory.
    pub vcpus: u32,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// TAP devices created for it.
    pub taps: Vec<String>,
    /// The guest's address on smartvm's bridge, if it has one.
    pub guest_ip: Option<String>,
    /// Seconds since it started (None before).
    pub uptime_s: Option<u64>,
    /// How its process ended, once it has (`code`/`signal`).
    pub exit: Option<ExitInfo>,
    /// The file its serial console is written to (it outlives the agent).
    #[serde(default)]
    pub console_file: Option<PathBuf>,
    /// The configuration it was created from (camelCase, as it is accepted).
    #[serde(serialize_with = "crate::config::serialize_camel_case")]
    pub config: crate::config::VmConfig,
    /// The program that owns it when that is not the agent, as `name[pid]` (e.g. a containerd
    /// shim's VM, listed from its journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl VmSummary {
    /// How a VM another program owns is listed from its journal (`None` without a config).
    pub fn from_journal(vm: &crate::vm::JournaledVm) -> Option<VmSummary> {
        let journal = &vm.journal;
        let config = journal.config.clone()?;
        let state = if vm.running { VmState::Running } else { VmState::Stopped };
        Some(VmSummary {
            id: journal.vm_id.clone(),
            state,
            pid: journal.pid().filter(|_| vm.running),
            socket: journal.socket.clone(),
            vcpus: config.machine_config.vcpu_count,
            mem_mib: config.machine_config.mem_size_mib,
            taps: journal.taps().iter().map(|t| t.to_string()).collect(),
            guest_ip: None,
            uptime_s: None,
            exit: None,
            console_file: None,
            config,
            owner: Some(match &vm.owner {
                Some((pid, name)) => format!("{name}[{pid}]"),
                None => "gone".into(),
            }),
        })
    }
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopSummary {
    /// The VM.
    pub id: String,
    /// The step of the stop sequence that ended it (`ctrl_alt_del`, `sigterm`, `sigkill`, …).
    pub step: StopStep,
}

/// `POST /v1/vms` with a base image instead of a full config: the agent fetches (or reuses
/// from its cache) the bundle and boots it, with these overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageVmRequest {
    /// Which bundle.
    pub image: ImageSource,
    /// The VM's id (default: a new UUID).
    #[serde(default)]
    pub id: Option<String>,
    /// vCPUs (default 1).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Memory in MiB (default 128).
    #[serde(default)]
    pub mem_mib: Option<u64>,
}

/// A base-image bundle: a preset (`latest`, `lts`, `hosted`) and for `hosted` its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSource {
    /// `latest` (default), `lts` or `hosted`.
    #[serde(default)]
    pub preset: Option<String>,
    /// A hosted manifest, as an http(s) URL (local paths are refused through the API: the agent
    /// would read them with its own privileges).
    #[serde(default)]
    pub manifest: Option<String>,
}

/// `POST /v1/vms/{id}/snapshot`: where to write the bundle (a new dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRequest {
    /// The bundle dir to create.
    pub dir: PathBuf,
    /// Leave the VM paused afterwards.
    #[serde(default)]
    pub keep_paused: bool,
}

/// The answer to a snapshot: the bundle's description file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSummary {
    /// `<dir>/snapshot.json`.
    pub bundle: PathBuf,
}

/// `POST /v1/snapshots/restore`: new VMs from a bundle, with the configuration it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequest {
    /// The bundle dir.
    pub dir: PathBuf,
    /// The new VM's id (with `count > 1`: the clones are `<id>-<i>`).
    #[serde(default)]
    pub id: Option<String>,
    /// How many VMs (clones) to start (default 1).
    #[serde(default)]
    pub count: Option<usize>,
    /// Resume the guests (default true).
    #[serde(default)]
    pub resume: Option<bool>,
}

/// `POST /v1/pools`: a warm pool (see [`crate::pool`]) of `size` VMs, cold (`config`: spawned
/// with their API up, configured and booted at checkout; with `preconfigured`, configured ahead
/// and only started at checkout) or template (`template`: restored paused from that snapshot
/// bundle, resumed at checkout). Exactly one of `config` and `template`. The agent
/// keeps it across restarts, and the VMs waiting in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolRequest {
    /// Its name (letters, digits, `-`, `_`; at most 32); its VMs are `<name>-<12 hex digits>`.
    pub name: String,
    /// How many VMs wait ready.
    pub size: usize,
    /// How many VMs it makes at once while refilling (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill_concurrency: Option<usize>,
    /// A cold pool's config (without an id: the pool gives ids).
    #[serde(default, serialize_with = "crate::config::serialize_camel_case_option")]
    pub config: Option<crate::config::VmConfig>,
    /// A template pool's snapshot bundle dir (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PathBuf>,
    /// With `config`: send it to each waiting Firecracker ahead (a configured pool: checkouts
    /// only start the instance, and take the pool's config and no other).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preconfigured: bool,
}

impl PoolRequest {
    /// The pool it describes (`INVALID_CONFIG` naming the field: neither or both kinds, a
    /// relative or unreadable bundle, an invalid spec).
    pub fn to_spec(&self) -> Result<crate::pool::PoolSpec, SmartVmError> {
        use crate::config::ConfigErrors;
        use crate::pool::{PoolKind, PoolSpec};
        let kind = match (&self.config, &self.template) {
            (Some(config), None) if self.preconfigured => PoolKind::Configured(config.clone()),
            (Some(config), None) => PoolKind::Cold(config.clone()),
            (None, Some(_)) if self.preconfigured => {
                return Err(ConfigErrors::single("preconfigured", "goes with a config, not a template").into());
            }
            (None, Some(dir)) if !dir.is_absolute() => {
                let why = format!("{} must be an absolute path", dir.display());
                return Err(ConfigErrors::single("template", why).into());
            }
            (None, Some(dir)) => PoolKind::template(dir)?,
            _ => return Err(ConfigErrors::single("config", "give a config (cold pool) or a template, not both").into()),
        };
        let spec =
            PoolSpec::new(&self.name, self.size, kind).with_refill_concurrency(self.refill_concurrency.unwrap_or(1));
        spec.validate()?;
        Ok(spec)
    }
}

/// `POST /v1/pools/{name}/checkout`: a VM of the pool, running. A cold pool's is configured
/// with `config` (default: the pool's; no id), a template pool's has its snapshot's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The config a cold pool's VM boots with.
    #[serde(default, serialize_with = "crate::config::serialize_camel_case_option")]
    pub config: Option<crate::config::VmConfig>,
}

/// What a VM became, as `GET /v1/events` reports it: one of its states (written as the state
/// is), or `removed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    /// It entered this state.
    Vm(VmState),
    /// Removed from the agent (nothing of it is left on the host).
    Removed,
}

const REMOVED: &str = "removed";

impl From<VmState> for EventState {
    fn from(state: VmState) -> Self {
        EventState::Vm(state)
    }
}

impl Serialize for EventState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EventState::Vm(state) => state.serialize(s),
            EventState::Removed => s.serialize_str(REMOVED),
        }
    }
}

impl<'de> Deserialize<'de> for EventState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::IntoDeserializer;
        let text = String::deserialize(d)?;
        if text == REMOVED {
            return Ok(EventState::Removed);
        }
        VmState::deserialize(text.into_deserializer()).map(EventState::Vm)
    }
}

/// One change of a VM, as `GET /v1/events` streams it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmEvent {
    /// The VM.
    pub id: String,
    /// What it became.
    pub state: EventState,
    /// While `configuring`: the start or restore step that begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How its process ended, for `stopped`/`error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
}

/// About the agent itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// smartvm's version.
    pub version: String,
    /// The agent's pid.
    pub pid: u32,
    /// VMs it holds.
    pub vms: usize,
}

/// The body of every error answer: 404 unknown id, 409 wrong state, 422 invalid config
/// (every problem with its field), 500 anything else; nothing was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The smartvm error code (`VM_NOT_FOUND`, `INVALID_STATE`, `INVALID_CONFIG`, …).
    pub code: ErrorCode,
    /// What went wrong, with its causes.
    pub message: String,
    /// For `INVALID_CONFIG`: each problem with its field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ProblemBody>,
}

/// One config problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemBody {
    /// Field path (`machineConfig.vcpuCount`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ErrorBody {
    /// The answer for `e`: its HTTP status and body (the message carries the cause chain).
    pub fn of(e: &SmartVmError) -> (u16, Self) {
        let (root, code) = (e.root(), e.code());
        let status = match code {
            ErrorCode::VmNotFound | ErrorCode::PoolNotFound | ErrorCode::NoSuchRoute => 404,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::InvalidState => 409,
            ErrorCode::InvalidConfig => 422,
            ErrorCode::Busy => 429,
            // An upstream (release or image server) failed, not the agent.
            ErrorCode::DownloadFailed
            | ErrorCode::VersionFetchFailed
            | ErrorCode::BaseImageResolveFailed
            | ErrorCode::BaseImageManifestFailed
            | ErrorCode::BaseImagePrepareFailed
            // So did the guest agent.
            | ErrorCode::GuestProtocol => 502,
            ErrorCode::GuestUnavailable => 503,
            ErrorCode::GuestRefused | ErrorCode::ExecFailed => 422,
            // A path the caller named that another user could have written.
            ErrorCode::UntrustedPath => 403,
            ErrorCode::SnapshotFailed if matches!(root, SmartVmError::Snapshot(s) if s.is_bad_request()) => 422,
            // Firecracker refused the config the request carried: the request's fault.
            ErrorCode::ApiError if e.status().is_some_and(|s| (400..500).contains(&s)) => 422,
            _ => 500,
        };
        let problems = match root {
            SmartVmError::InvalidConfig(errors) => errors
                .problems
                .iter()
                .map(|p| ProblemBody { field: p.field.clone(), message: p.message.clone() })
                .collect(),
            SmartVmError::PermissionDenied { field, reason } => {
                vec![ProblemBody { field: field.clone(), message: reason.clone() }]
            }
            _ => Vec::new(),
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        (status, Self { code, message, problems })
    }

    /// Back into an error on the client side (an invalid config with its problems again).
    pub fn into_error(self, status: u16) -> SmartVmError {
        let code = self.code;
        if code == ErrorCode::InvalidConfig && !self.problems.is_empty() {
            let problems =
                self.problems.into_iter().map(|p| ConfigProblem { field: p.field, message: p.message }).collect();
            return SmartVmError::InvalidConfig(crate::config::ConfigErrors { problems });
        }
        SmartVmError::Agent { status, code, message: self.message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_code_status_and_problems_both_ways() {
        let invalid: SmartVmError =
            crate::config::ConfigErrors::single("machineConfig.vcpuCount", "99 is outside 1-32").into();
        let (status, body) = ErrorBody::of(&invalid);
        assert_eq!((status, body.code, body.problems.len()), (422, ErrorCode::InvalidConfig, 1));
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["code"], "INVALID_CONFIG");
        assert_eq!(serde_json::from_value::<ErrorBody>(json).unwrap(), body);
        let back = body.into_error(status);
        assert!(matches!(&back, SmartVmError::InvalidConfig(e) if e.has_field("machineConfig.vcpuCount")));
        let (status, body) = ErrorBody::of(&SmartVmError::VmNotFound { id: "x".into() });
        assert_eq!((status, body.code), (404, ErrorCode::VmNotFound));
        assert_eq!(body.into_error(404).code(), ErrorCode::VmNotFound);
        let state = SmartVmError::InvalidState { operation: "pause", state: crate::lifecycle::VmState::Stopped };
        assert_eq!(ErrorBody::of(&state).0, 409);
    }
}
