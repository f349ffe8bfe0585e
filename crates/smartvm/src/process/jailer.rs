//! Running Firecracker under its jailer: chroot, unprivileged uid/gid, cgroups, network
//! namespace, resource limits. The command is built as a pure wrapper around the Firecracker
//! command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::FirecrackerCommand;

/// The jailer's default chroot base.
pub const DEFAULT_JAIL_BASE: &str = "/srv/jailer";

/// How to jail a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary (shipped beside `firecracker`).
    pub binary: PathBuf,
    /// User Firecracker runs as.
    pub uid: u32,
    /// Group Firecracker runs as.
    pub gid: u32,
    /// Base of the chroot jails (jailer default `/srv/jailer`); must exist and allow device
    /// nodes (not a `nodev` mount such as `/dev/shm`).
    pub chroot_base_dir: PathBuf,
    /// `--cgroup-version` (1 or 2).
    pub cgroup_version: Option<u8>,
    /// `--cgroup <file>=<value>` entries, e.g. `cpuset.cpus=0`.
    pub cgroups: Vec<(String, String)>,
    /// `--parent-cgroup` (default: the exec file name).
    pub parent_cgroup: Option<String>,
    /// `--netns`: path of a network namespace to join.
    pub netns: Option<PathBuf>,
    /// `--resource-limit <resource>=<value>`, e.g. `no-file=1024`.
    pub resource_limits: Vec<(String, u64)>,
}

impl JailerConfig {
    /// Jail as `uid:gid` under `/srv/jailer`.
    pub fn new(binary: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        Self {
            binary: binary.into(),
            uid,
            gid,
            chroot_base_dir: PathBuf::from(DEFAULT_JAIL_BASE),
            cgroup_version: None,
            cgroups: Vec::new(),
            parent_cgroup: None,
            netns: None,
            resource_limits: Vec::new(),
        }
    }

    fn exec_name(firecracker: &Path) -> String {
        firecracker.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "firecracker".into())
    }

    /// `<base>/<exec name>/<id>`: everything the jail owns on the host.
    pub fn jail_dir(&self, firecracker: &Path, id: &str) -> PathBuf {
        self.chroot_base_dir.join(Self::exec_name(firecracker)).join(id)
    }

    /// `<jail dir>/root`: the chroot; a path `/x` inside the jail is `<root>/x` on the host.
    pub fn chroot_root(&self, firecracker: &Path, id: &str) -> PathBuf {
        self.jail_dir(firecracker, id).join("root")
    }

    /// The cgroup directories the jailer creates for `id` (removed at cleanup).
    pub fn cgroup_dirs(&self, firecracker: &Path, id: &str) -> Vec<PathBuf> {
        let parent = self.parent_cgroup.clone().unwrap_or_else(|| Self::exec_name(firecracker));
        let root = Path::new("/sys/fs/cgroup");
        if self.cgroup_version == Some(2) {
            return if self.cgroups.is_empty() { vec![] } else { vec![root.join(&parent).join(id)] };
        }
        let mut controllers: Vec<&str> = self.cgroups.iter().filter_map(|(k, _)| k.split('.').next()).collect();
        controllers.sort_unstable();
        controllers.dedup();
        controllers.into_iter().map(|c| root.join(c).join(&parent).join(id)).collect()
    }

    /// The jailer command running `firecracker` (whose arguments must use in-jail paths) as `id`.
    pub fn wrap(&self, id: &str, firecracker: &FirecrackerCommand) -> FirecrackerCommand {
        let mut a: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            a.push(name.into());
            a.push(value);
        };
        flag("--id", id.into());
        flag("--exec-file", firecracker.binary.clone().into());
        flag("--uid", self.uid.to_string().into());
        flag("--gid", self.gid.to_string().into());
        flag("--chroot-base-dir", self.chroot_base_dir.clone().into());
        if let Some(ns) = &self.netns {
            flag("--netns", ns.clone().into());
        }
        if let Some(v) = self.cgroup_version {
            flag("--cgroup-version", v.to_string().into());
        }
        for (k, v) in &self.cgroups {
            flag("--cgroup", format!("{k}={v}").into());
        }
        if let Some(p) = &self.parent_cgroup {
            flag("--parent-cgroup", p.into());
        }
        for (k, v) in &self.resource_limits {
            flag("--resource-limit", format!("{k}={v}").into());
        }
        a.push("--".into());
        // The jailer passes `--id` to Firecracker itself; a second one is refused.
        a.extend(FirecrackerCommand { id: None, ..firecracker.clone() }.args());
        FirecrackerCommand {
            binary: self.binary.clone(),
            api_socket: None,
            extra_args: a,
            bind_mount: firecracker.bind_mount.clone(),
            umask: firecracker.umask,
            ..FirecrackerCommand::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_the_firecracker_command() {
        let mut j = JailerConfig::new("/bin/jailer", 123, 456);
        j.chroot_base_dir = "/jails".into();
        j.cgroup_version = Some(1);
        j.cgroups = vec![("cpuset.cpus".into(), "0".into()), ("cpuset.mems".into(), "0".into())];
        j.resource_limits = vec![("no-file".into(), 1024)];
        let mut fc = FirecrackerCommand::new("/opt/fc/firecracker", "/run/firecracker.socket");
        fc.id = Some("vm-1".into());
        let cmd = j.wrap("vm-1", &fc);
        assert_eq!(cmd.binary, Path::new("/bin/jailer"));
        let args: Vec<String> = cmd.args().into_iter().map(|s| s.into_string().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--id",
                "vm-1",
                "--exec-file",
                "/opt/fc/firecracker",
                "--uid",
                "123",
                "--gid",
                "456",
                "--chroot-base-dir",
                "/jails",
                "--cgroup-version",
                "1",
                "--cgroup",
                "cpuset.cpus=0",
                "--cgroup",
                "cpuset.mems=0",
                "--resource-limit",
                "no-file=1024",
                "--",
                "--api-sock",
                "/run/firecracker.socket"
            ]
        );
        assert_eq!(j.chroot_root(&fc.binary, "vm-1"), Path::new("/jails/firecracker/vm-1/root"));
        assert_eq!(j.cgroup_dirs(&fc.binary, "vm-1"), [PathBuf::from("/sys/fs/cgroup/cpuset/firecracker/vm-1")]);
        j.cgroup_version = Some(2);
        j.parent_cgroup = Some("smartvm".into());
        assert_eq!(j.cgroup_dirs(&fc.binary, "vm-1"), [PathBuf::from("/sys/fs/cgroup/smartvm/vm-1")]);
    }
}
