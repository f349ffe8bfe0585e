//! Booting from Firecracker's `--config-file`: the [pre-boot plan](super::plan::boot_plan) as one
//! document Firecracker reads as it starts, so the guest boots with no API round trip while
//! the API socket stays up for everything after boot. The same resources as the requests.
//!
//! A config Firecracker refuses ends the process early; [`rejection`] reads what it printed and
//! names the resource as the refused pre-boot request would have (`API_ERROR`, `PUT /drives`).

use crate::error::SmartVmError;

/// How a VM is configured before its guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    /// One `--config-file` read by Firecracker as it starts (no pre-boot round trip).
    ConfigFile,
    /// `PUT` requests, then `InstanceStart` (needs no version known in advance; restores).
    Api,
    /// Like [`ConfigFile`](Self::ConfigFile), with `--no-api`: no API socket at all, for VMs
    /// that only run to completion ([`VmRuntimeOptions::api`](super::VmRuntimeOptions::api)
    /// off). Firecracker starts no API thread and has none to stop at exit.
    NoApi,
}

/// What Firecracker logs (at level Info) once the VM it built from the file runs.
pub const BOOTED_LINE: &str = "Successfully started microvm that was configured from one single json";

/// Whether a line of Firecracker's log is [`BOOTED_LINE`]'s.
pub(crate) fn is_booted_line(line: &str) -> bool {
    line.contains(BOOTED_LINE)
}

/// The path for a VM: the config file whenever the Firecracker version is known before spawn
/// (payload shapes depend on it), smartvm reads Firecracker's own log (the only place a
/// config-file boot reports its outcome: not with a logger in the config, nor in a jail), and
/// the API path was not asked for; without the API socket after boot when `api_after_boot` is
/// off. (A VM whose API is off but that can only boot through the API is refused before this
/// is asked: see `MicroVm::check_runtime_fit`.)
pub fn boot_path(version_known: bool, log_readable: bool, api_requested: bool, api_after_boot: bool) -> BootPath {
    match (version_known && log_readable && !api_requested, api_after_boot) {
        (true, true) => BootPath::ConfigFile,
        (true, false) => BootPath::NoApi,
        (false, _) => BootPath::Api,
    }
}

/// Firecracker's `ResourcesError` variants that are not one resource's, and the path named
/// for them (the resources' own come from [`crate::config`]'s table).
const OTHER_REFUSALS: [(&str, &str); 3] =
    [("File", "/machine-config"), ("InvalidJson", "(config file)"), ("Mmds", "/mmds")];

/// The error a refused config file stands for, from Firecracker's stderr `lines`: which
/// resource it refused (as the API path that configures it) and Firecracker's own message.
/// `None` when the lines show no refusal of the config (the process died for another reason).
pub fn rejection(lines: &[String]) -> Option<SmartVmError> {
    let debug = lines.iter().rev().find_map(|l| l.strip_prefix("Error: "))?;
    let path = if let Some(rest) = debug.split("ParseFromJson(").nth(1) {
        let variant = rest.split(['(', ')']).next().unwrap_or_default();
        let mut known = crate::config::REFUSALS.iter().chain(OTHER_REFUSALS.iter());
        known.find(|(v, _)| *v == variant).map_or("(config file)", |(_, p)| p)
    } else if debug.contains("StartMicroVM(") {
        "/actions"
    } else {
        return None;
    };
    // The readable form, when Firecracker's log went to stderr too.
    let readable =
        ["Configuration for VMM from one single json failed: ", "Could not Start MicroVM from one single json: "];
    let message = lines
        .iter()
        .find_map(|l| readable.iter().find_map(|m| l.split_once(m).map(|(_, msg)| msg.to_string())))
        .unwrap_or_else(|| debug.to_string());
    Some(SmartVmError::Api { method: "PUT".into(), path: path.into(), status: 400, fault_message: Some(message) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_only_where_the_outcome_can_be_seen() {
        assert_eq!(boot_path(true, true, false, true), BootPath::ConfigFile);
        assert_eq!(boot_path(false, true, false, true), BootPath::Api, "payloads need the version");
        assert_eq!(boot_path(true, false, false, true), BootPath::Api, "a user logger or a jail hides the outcome");
        assert_eq!(boot_path(true, true, true, true), BootPath::Api);
        assert_eq!(boot_path(true, true, false, false), BootPath::NoApi, "the API off: the file, no socket");
        assert_eq!(boot_path(false, true, false, false), BootPath::Api, "refused at create, never started");
    }

    #[test]
    fn a_refused_config_names_the_resource_like_a_refused_request() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let drive = lines(&[
            "2026-11-29T10:00:00 [vm:main] RunWithApiError error: Failed to build MicroVM from Json: Configuration \
             for VMM from one single json failed: Block device error: Unable to create the virtio block device: \
             No such file or directory (os error 2)",
            "Error: RunWithApi(BuildFromJson(ParseFromJson(BlockDevice(CreateBlockDevice(VirtioBackend(..))))))",
        ]);
        let err = rejection(&drive).unwrap();
        assert_eq!(err.code(), "API_ERROR");
        let text = err.to_string();
        assert!(text.contains("PUT /drives") && text.contains("No such file or directory"), "{text}");
        // Only the Debug line (the log went to the user's file): still the resource.
        let mmds = lines(&["Error: RunWithApi(BuildFromJson(ParseFromJson(MmdsConfig(InvalidIpv4Addr))))"]);
        assert!(rejection(&mmds).unwrap().to_string().contains("PUT /mmds/config"));
        let start = lines(&["Error: RunWithApi(BuildFromJson(StartMicroVM(Internal(..))))"]);
        assert!(rejection(&start).unwrap().to_string().contains("PUT /actions"));
        assert!(rejection(&lines(&["Error: RunWithApi(FailedToBindSocket(\"/s\"))"])).is_none());
        assert!(rejection(&lines(&["some other output"])).is_none());
    }
}
