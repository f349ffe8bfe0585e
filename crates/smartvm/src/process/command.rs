//! The Firecracker command line, built as a pure list of arguments.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::LogLevel;

/// Seccomp mode of the Firecracker process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Seccomp {
    /// Firecracker's built-in filters (recommended).
    #[default]
    Default,
    /// `--no-seccomp`.
    Disabled,
    /// `--seccomp-filter <file>`.
    Filter(PathBuf),
}

/// Arguments of one `firecracker` invocation. [`args`](Self::args) is pure and unit-tested.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FirecrackerCommand {
    /// The binary.
    pub binary: PathBuf,
    /// `--api-sock` (absent with `no_api`).
    pub api_socket: Option<PathBuf>,
    /// `--id` (1-64 of `[A-Za-z0-9-]`; see [`instance_id`]).
    pub id: Option<String>,
    /// `--config-file`.
    pub config_file: Option<PathBuf>,
    /// `--no-api` (requires `config_file`).
    pub no_api: bool,
    /// Seccomp mode.
    pub seccomp: Seccomp,
    /// `--log-path`.
    pub log_path: Option<PathBuf>,
    /// `--level`.
    pub level: Option<LogLevel>,
    /// `--metrics-path`.
    pub metrics_path: Option<PathBuf>,
    /// `--boot-timer`.
    pub boot_timer: bool,
    /// `--http-api-max-payload-size`.
    pub http_api_max_payload_size: Option<usize>,
    /// `--mmds-size-limit`.
    pub mmds_size_limit: Option<usize>,
    /// Anything else, appended verbatim.
    pub extra_args: Vec<OsString>,
    /// Run the process in a private mount namespace with `source` bind-mounted on `target`
    /// (not an argument: applied between clone and exec; needs CAP_SYS_ADMIN).
    pub bind_mount: Option<BindMount>,
    /// File-creation mask of the process (not an argument: applied between clone and exec), so
    /// the sockets, snapshot and memory files Firecracker creates are private.
    pub umask: Option<u32>,
}

/// A bind mount visible only to one Firecracker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Directory to expose.
    pub source: PathBuf,
    /// Existing (empty) directory it appears at.
    pub target: PathBuf,
}

/// Firecracker's `--id` accepts 1-64 characters of `[A-Za-z0-9-]`: other characters become `-`.
pub fn instance_id(vm_id: &str) -> String {
    let mapped: String =
        vm_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(64).collect();
    if mapped.is_empty() {
        "smartvm".into()
    } else {
        mapped
    }
}

impl FirecrackerCommand {
    /// A command for `binary` serving its API on `api_socket`.
    pub fn new(binary: impl Into<PathBuf>, api_socket: impl Into<PathBuf>) -> Self {
        Self { binary: binary.into(), api_socket: Some(api_socket.into()), ..Self::default() }
    }

    /// The argument vector (without the binary).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: Option<OsString>| {
            a.push(name.into());
            if let Some(v) = value {
                a.push(v);
            }
        };
        if self.no_api {
            flag("--no-api", None);
        } else if let Some(sock) = &self.api_socket {
            flag("--api-sock", Some(sock.into()));
        }
        if let Some(id) = &self.id {
            flag("--id", Some(id.into()));
        }
        if let Some(cfg) = &self.config_file {
            flag("--config-file", Some(cfg.into()));
        }
        match &self.seccomp {
            Seccomp::Default => {}
            Seccomp::Disabled => flag("--no-seccomp", None),
            Seccomp::Filter(p) => flag("--seccomp-filter", Some(p.into())),
        }
        if let Some(p) = &self.log_path {
            flag("--log-path", Some(p.into()));
        }
        if let Some(level) = self.level {
            flag("--level", Some(format!("{level:?}").into()));
        }
        if let Some(p) = &self.metrics_path {
            flag("--metrics-path", Some(p.into()));
        }
        if self.boot_timer {
            flag("--boot-timer", None);
        }
        if let Some(n) = self.http_api_max_payload_size {
            flag("--http-api-max-payload-size", Some(n.to_string().into()));
        }
        if let Some(n) = self.mmds_size_limit {
            flag("--mmds-size-limit", Some(n.to_string().into()));
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(c: &FirecrackerCommand) -> Vec<String> {
        c.args().into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn flag_by_flag() {
        let mut c = FirecrackerCommand::new("/fc", "/run/vm/firecracker.sock");
        assert_eq!(strs(&c), ["--api-sock", "/run/vm/firecracker.sock"]);
        c.id = Some("vm-1".into());
        assert_eq!(strs(&c)[2..], ["--id", "vm-1"]);
        c.seccomp = Seccomp::Disabled;
        assert!(strs(&c).contains(&"--no-seccomp".to_string()));
        c.seccomp = Seccomp::Filter("/f.bpf".into());
        assert_eq!(strs(&c)[4..], ["--seccomp-filter", "/f.bpf"]);
        c.level = Some(LogLevel::Warning);
        c.log_path = Some("/l".into());
        c.metrics_path = Some("/m".into());
        c.boot_timer = true;
        c.http_api_max_payload_size = Some(1000);
        c.mmds_size_limit = Some(2000);
        c.extra_args = vec!["--foo".into()];
        assert_eq!(
            strs(&c)[6..],
            [
                "--log-path",
                "/l",
                "--level",
                "Warning",
                "--metrics-path",
                "/m",
                "--boot-timer",
                "--http-api-max-payload-size",
                "1000",
                "--mmds-size-limit",
                "2000",
                "--foo"
            ]
        );
        let raw = FirecrackerCommand {
            binary: "/fc".into(),
            no_api: true,
            config_file: Some("/c.json".into()),
            api_socket: Some("/x".into()),
            ..Default::default()
        };
        assert_eq!(strs(&raw), ["--no-api", "--config-file", "/c.json"]);
    }

    #[test]
    fn instance_ids() {
        assert_eq!(instance_id("my_vm.1"), "my-vm-1");
        assert_eq!(instance_id(""), "smartvm");
        assert_eq!(instance_id(&"a".repeat(80)).len(), 64);
    }
}
