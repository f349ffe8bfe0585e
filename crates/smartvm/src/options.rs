//! [`SmartVmOptions`]: defaults, environment overrides and where the Firecracker binary is
//! looked for.
//!
//! The default directories differ from the TypeScript library's `/tmp/.smartvm`: smartvm runs
//! as root, and a directory in a world-writable place such as `/tmp` can be created first by any
//! local user, who would then own what root later executes and trusts. So:
//!
//! | running as | data dir | runtime dir |
//! |---|---|---|
//! | root | `/var/lib/smartvm` | `/run/smartvm` (tmpfs) |
//! | a user | `$XDG_DATA_HOME/smartvm` (else `~/.local/share/smartvm`) | `$XDG_RUNTIME_DIR/smartvm` (else `/dev/shm/smartvm-<uid>`) |
//!
//! `SMARTVM_DATA_DIR` / `SMARTVM_RUNTIME_DIR` and explicit options still win, and every
//! directory is checked before it is trusted (see [`trust`](crate::trust)).

use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "images")]
use crate::images::Mirrors;
use crate::version::FirecrackerVersion;

/// Orchestrator options. [`from_env`](Self::from_env) also reads `SMARTVM_DATA_DIR`,
/// `SMARTVM_RUNTIME_DIR` and `SMARTVM_FIRECRACKER_BIN`.
#[derive(Debug, Clone)]
pub struct SmartVmOptions {
    /// Binaries, kernels, rootfs images (default: see the module docs).
    pub data_dir: PathBuf,
    /// Per-VM runtime dirs (default: see the module docs).
    pub runtime_dir: PathBuf,
    /// How every VM it creates behaves: staging, API socket timeout, boot path, detachment
    /// (the host agent sets `detached`).
    pub vm_policy: crate::vm::VmPolicy,
    /// Firecracker version to look for under `<data_dir>/bin/` (default v1.12.1).
    pub firecracker_version: Option<FirecrackerVersion>,
    /// Host architecture name (`x86_64`, `aarch64`).
    pub arch: String,
    /// Use this binary and skip the search.
    pub firecracker_binary_path: Option<PathBuf>,
    /// Bridge for VMs with managed networking (default `svbr0`).
    pub bridge_name: String,
    /// Subnet for managed networking (default `172.30.0.0/24`).
    pub subnet: String,
    /// Base image cache (default `<data_dir>/base-images`).
    pub base_image_cache_dir: Option<PathBuf>,
    /// Base image bundles kept (default 2).
    pub max_stored_base_images: usize,
    /// Hosted base-image manifest URL.
    pub base_image_manifest_url: Option<String>,
    /// Hosted base-image manifest path.
    pub base_image_manifest_path: Option<PathBuf>,
    /// How long `stop()` waits after Ctrl-Alt-Del before SIGTERM.
    pub stop_grace: Duration,
    /// When no Firecracker binary is found, [`create_vm`](crate::SmartVm::create_vm) still
    /// succeeds and `start()` downloads the release of
    /// [`firecracker_version`](Self::firecracker_version) (default v1.12.1) into
    /// `<data_dir>/bin/<version>/`, verified against its published SHA-256s, as the seed's
    /// quick start does (default true; `SMARTVM_AUTO_DOWNLOAD=0` turns it off). Never with an
    /// explicit [`firecracker_binary_path`](Self::firecracker_binary_path), and only into a
    /// data dir that passes the [trust check](crate::trust) (`UNTRUSTED_PATH` otherwise).
    #[cfg(feature = "images")]
    pub auto_download_binary: bool,
    /// Remote base URLs (GitHub API, GitHub, CI artifact bucket).
    #[cfg(feature = "images")]
    pub mirrors: Mirrors,
    /// Run VMs under Firecracker's jailer.
    pub jailer: Option<crate::process::JailerConfig>,
    /// Without an explicit [`jailer`](Self::jailer), jail every VM anyway: the `jailer` beside
    /// the Firecracker binary, uid/gid 65534 (`nobody`), chroot base `/srv/jailer`
    /// (`SMARTVM_JAILED=1`; see the README for the cost and when to use it).
    pub jailed_by_default: bool,
}

pub use crate::process::DEFAULT_JAIL_BASE;

/// The default data and runtime dirs for user `uid` (see the module docs); `lookup` reads
/// `XDG_DATA_HOME`, `HOME` and `XDG_RUNTIME_DIR`. Pure.
pub fn default_dirs(uid: u32, lookup: impl Fn(&str) -> Option<String>) -> (PathBuf, PathBuf) {
    if uid == 0 {
        return (PathBuf::from("/var/lib/smartvm"), PathBuf::from("/run/smartvm"));
    }
    let get = |k: &str| lookup(k).filter(|v| v.starts_with('/'));
    let data = match (get("XDG_DATA_HOME"), get("HOME")) {
        (Some(x), _) => Path::new(&x).join("smartvm"),
        (None, Some(home)) => Path::new(&home).join(".local/share/smartvm"),
        (None, None) => PathBuf::from(format!("/var/tmp/smartvm-{uid}")),
    };
    let runtime = match get("XDG_RUNTIME_DIR") {
        Some(r) => Path::new(&r).join("smartvm"),
        None => PathBuf::from(format!("/dev/shm/smartvm-{uid}")),
    };
    (data, runtime)
}

/// The default runtime dir for the current user (see the module docs).
pub fn default_runtime_dir() -> PathBuf {
    default_dirs(nix::unistd::geteuid().as_raw(), |k| std::env::var(k).ok()).1
}

impl Default for SmartVmOptions {
    fn default() -> Self {
        let (data_dir, runtime_dir) = default_dirs(nix::unistd::geteuid().as_raw(), |k| std::env::var(k).ok());
        Self {
            data_dir,
            runtime_dir,
            vm_policy: crate::vm::VmPolicy::default(),
            firecracker_version: None,
            arch: std::env::consts::ARCH.to_string(),
            firecracker_binary_path: None,
            bridge_name: "svbr0".into(),
            subnet: "172.30.0.0/24".into(),
            base_image_cache_dir: None,
            max_stored_base_images: 2,
            base_image_manifest_url: None,
            base_image_manifest_path: None,
            stop_grace: Duration::from_secs(2),
            #[cfg(feature = "images")]
            auto_download_binary: true,
            #[cfg(feature = "images")]
            mirrors: Mirrors::default(),
            jailer: None,
            jailed_by_default: false,
        }
    }
}

impl SmartVmOptions {
    /// Defaults overridden by `SMARTVM_DATA_DIR`, `SMARTVM_RUNTIME_DIR`, `SMARTVM_FIRECRACKER_BIN`,
    /// `SMARTVM_FIRECRACKER_VERSION`, `SMARTVM_ARCH`, `SMARTVM_BASE_IMAGE_CACHE_DIR`,
    /// `SMARTVM_MAX_STORED_BASE_IMAGES`, `SMARTVM_BASE_IMAGE_MANIFEST_URL`/`_PATH`,
    /// `SMARTVM_AUTO_DOWNLOAD` (`0`, `false`, `no`: off) (the seed's
    /// variables too: `SMARTVM_INTEGRATION_DATA_DIR` stands for `SMARTVM_DATA_DIR` when that is
    /// unset), `SMARTVM_JAILED`, `SMARTVM_BOOT_VIA_API` and the mirror variables of
    /// [`Mirrors::from_env`]. A value that does not parse is ignored (the default stays).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by the same variables, read through `lookup` (testable without
    /// touching the process environment). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let (data_dir, runtime_dir) = default_dirs(nix::unistd::geteuid().as_raw(), &lookup);
        let d = Self { data_dir, runtime_dir, ..Self::default() };
        Self {
            data_dir: get("SMARTVM_DATA_DIR")
                .or_else(|| get("SMARTVM_INTEGRATION_DATA_DIR"))
                .map_or(d.data_dir, PathBuf::from),
            firecracker_version: get("SMARTVM_FIRECRACKER_VERSION").and_then(|v| v.parse().ok()),
            arch: get("SMARTVM_ARCH").unwrap_or(d.arch.clone()),
            base_image_cache_dir: get("SMARTVM_BASE_IMAGE_CACHE_DIR").map(PathBuf::from),
            max_stored_base_images: get("SMARTVM_MAX_STORED_BASE_IMAGES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.max_stored_base_images),
            runtime_dir: get("SMARTVM_RUNTIME_DIR").map_or(d.runtime_dir, PathBuf::from),
            firecracker_binary_path: get("SMARTVM_FIRECRACKER_BIN").map(PathBuf::from),
            base_image_manifest_url: get("SMARTVM_BASE_IMAGE_MANIFEST_URL"),
            base_image_manifest_path: get("SMARTVM_BASE_IMAGE_MANIFEST_PATH").map(PathBuf::from),
            #[cfg(feature = "images")]
            auto_download_binary: get("SMARTVM_AUTO_DOWNLOAD").is_none_or(|v| !is_off(&v)),
            #[cfg(feature = "images")]
            mirrors: Mirrors::from_lookup(&lookup),
            jailed_by_default: get("SMARTVM_JAILED").is_some_and(|v| v == "1"),
            vm_policy: crate::vm::VmPolicy {
                boot_via_api: get("SMARTVM_BOOT_VIA_API").is_some_and(|v| v == "1"),
                ..d.vm_policy.clone()
            },
            ..d
        }
    }

    /// The base-image cache dir.
    pub fn base_image_cache_dir(&self) -> PathBuf {
        self.base_image_cache_dir.clone().unwrap_or_else(|| self.data_dir.join("base-images"))
    }

    /// Where jails live: the jailer's chroot base when configured, else the jailer's default.
    pub fn jail_base(&self) -> PathBuf {
        self.jailer.as_ref().map_or_else(|| PathBuf::from(DEFAULT_JAIL_BASE), |j| j.chroot_base_dir.clone())
    }

    /// The jailer configuration VMs run with for `firecracker`: the explicit one, or with
    /// [`jailed_by_default`](Self::jailed_by_default) the default one; `None` runs them directly.
    pub fn effective_jailer(&self, firecracker: &Path) -> Option<crate::process::JailerConfig> {
        self.jailer.clone().or_else(|| {
            self.jailed_by_default.then(|| {
                let mut j = crate::process::JailerConfig::new(firecracker.with_file_name("jailer"), 65534, 65534);
                j.chroot_base_dir = PathBuf::from(DEFAULT_JAIL_BASE);
                j
            })
        })
    }
}

/// `0`, `false`, `no` or `off` (any case): an environment switch turned off.
#[cfg(feature = "images")]
fn is_off(value: &str) -> bool {
    ["0", "false", "no", "off"].contains(&value.trim().to_ascii_lowercase().as_str())
}

/// Where `ensure_binary` looks, in order: explicit path, `<data_dir>/bin/<version>/firecracker`,
/// then `firecracker` on `PATH`. Pure: no filesystem access.
pub fn binary_candidates(options: &SmartVmOptions, path_env: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    if let Some(p) = &options.firecracker_binary_path {
        return vec![p.clone()];
    }
    let version = options.firecracker_version.unwrap_or(FirecrackerVersion::DEFAULT);
    let mut c = vec![options.data_dir.join("bin").join(version.to_string()).join("firecracker")];
    if let Some(path) = path_env {
        c.extend(std::env::split_paths(path).map(|d| d.join("firecracker")));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_depend_on_the_user() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/ann".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/1000".to_string()),
            _ => None,
        };
        assert_eq!(default_dirs(0, env), (PathBuf::from("/var/lib/smartvm"), PathBuf::from("/run/smartvm")));
        assert_eq!(
            default_dirs(1000, env),
            (PathBuf::from("/home/ann/.local/share/smartvm"), PathBuf::from("/run/user/1000/smartvm"))
        );
        let xdg = |k: &str| (k == "XDG_DATA_HOME").then(|| "/data/ann".to_string());
        assert_eq!(
            default_dirs(1000, xdg),
            (PathBuf::from("/data/ann/smartvm"), PathBuf::from("/dev/shm/smartvm-1000"))
        );
        let relative = |_: &str| Some("relative".to_string());
        assert_eq!(default_dirs(7, relative).0, PathBuf::from("/var/tmp/smartvm-7"), "relative values are ignored");
    }

    #[test]
    fn options_from_environment() {
        let env = |k: &str| match k {
            "SMARTVM_DATA_DIR" => Some("/data".to_string()),
            "SMARTVM_RUNTIME_DIR" => Some("/run/sv".to_string()),
            "SMARTVM_FIRECRACKER_BIN" => Some(String::new()),
            "SMARTVM_CI_ARTIFACTS_URL" => Some("http://mirror/ci/".to_string()),
            _ => None,
        };
        let o = SmartVmOptions::from_lookup(env);
        assert_eq!((o.data_dir.as_path(), o.runtime_dir.as_path()), (Path::new("/data"), Path::new("/run/sv")));
        assert_eq!(o.firecracker_binary_path, None, "empty means unset");
        #[cfg(feature = "images")]
        assert_eq!(o.mirrors.ci_artifacts, "http://mirror/ci");
        assert_eq!(o.base_image_cache_dir(), Path::new("/data/base-images"));
        let seed = |k: &str| match k {
            "SMARTVM_INTEGRATION_DATA_DIR" => Some("/seed".to_string()),
            "SMARTVM_FIRECRACKER_VERSION" => Some("v1.7.0".to_string()),
            "SMARTVM_ARCH" => Some("aarch64".to_string()),
            "SMARTVM_BASE_IMAGE_CACHE_DIR" => Some("/cache".to_string()),
            "SMARTVM_MAX_STORED_BASE_IMAGES" => Some("5".to_string()),
            _ => None,
        };
        let s = SmartVmOptions::from_lookup(seed);
        assert_eq!(s.data_dir, Path::new("/seed"));
        assert_eq!(s.firecracker_version, Some(FirecrackerVersion::new(1, 7, 0)));
        assert_eq!((s.arch.as_str(), s.max_stored_base_images), ("aarch64", 5));
        assert_eq!(s.base_image_cache_dir(), Path::new("/cache"));
        #[cfg(feature = "images")]
        {
            assert!(s.auto_download_binary, "on by default");
            for off in ["0", "false", "No"] {
                let o = SmartVmOptions::from_lookup(|k| (k == "SMARTVM_AUTO_DOWNLOAD").then(|| off.to_string()));
                assert!(!o.auto_download_binary, "{off}");
            }
        }
        let d = SmartVmOptions::from_lookup(|_| None);
        assert_eq!(
            (d.data_dir.as_path(), d.bridge_name.as_str(), d.max_stored_base_images),
            (default_dirs(nix::unistd::geteuid().as_raw(), |_| None).0.as_path(), "svbr0", 2)
        );
    }

    #[test]
    fn binary_search_order() {
        let mut o = SmartVmOptions { data_dir: "/data".into(), ..Default::default() };
        let c = binary_candidates(&o, Some(std::ffi::OsStr::new("/a:/b")));
        assert_eq!(
            c,
            [PathBuf::from("/data/bin/v1.12.1/firecracker"), "/a/firecracker".into(), "/b/firecracker".into()]
        );
        o.firecracker_binary_path = Some("/x/fc".into());
        assert_eq!(binary_candidates(&o, None), [PathBuf::from("/x/fc")]);
        o.firecracker_binary_path = None;
        o.firecracker_version = Some(FirecrackerVersion::new(1, 7, 0));
        assert_eq!(binary_candidates(&o, None), [PathBuf::from("/data/bin/v1.7.0/firecracker")]);
    }
}
