//! [`SmartVm`]: options, the Firecracker binary, the VM registry and global cleanup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{ApiClient, GetInstanceInfo, PatchVmState, VmStateBody, VmStateRequest};
use crate::config::{ConfigErrors, VmConfig};
use crate::error::{Result, SmartVmError};
use crate::images::{BaseImageBundle, BaseImageManager, BaseImageOptions, ImageManager, Mirrors, Progress};
use crate::network::{NetworkManager, NetworkOptions};
use crate::process::StopPlan;
use crate::snapshot::Snapshot;
use crate::version::FirecrackerVersion;
use crate::vm::{MicroVm, VmJournal, VmRuntimeOptions};

/// Orchestrator options. Defaults follow SPEC §1; [`from_env`](Self::from_env) also reads
/// `SMARTVM_DATA_DIR`, `SMARTVM_RUNTIME_DIR` and `SMARTVM_FIRECRACKER_BIN`.
#[derive(Debug, Clone)]
pub struct SmartVmOptions {
    /// Binaries, kernels, rootfs images (default `/tmp/.smartvm`).
    pub data_dir: PathBuf,
    /// Per-VM runtime dirs (default `/dev/shm/.smartvm/runtime`, else `<tmp>/.smartvm/runtime`).
    pub runtime_dir: PathBuf,
    /// Stage writable drives (default true).
    pub ephemeral_writable_drives: bool,
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
    /// How long to wait for a VM's API socket.
    pub socket_timeout: Duration,
    /// How long `stop()` waits after Ctrl-Alt-Del before SIGTERM.
    pub stop_grace: Duration,
    /// Remote base URLs (GitHub API, GitHub, CI artifact bucket).
    pub mirrors: Mirrors,
    /// Run VMs under Firecracker's jailer.
    pub jailer: Option<crate::process::JailerConfig>,
}

/// The default runtime dir: tmpfs (`/dev/shm`) when present.
pub fn default_runtime_dir() -> PathBuf {
    if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm/.smartvm/runtime")
    } else {
        std::env::temp_dir().join(".smartvm/runtime")
    }
}

impl Default for SmartVmOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/tmp/.smartvm"),
            runtime_dir: default_runtime_dir(),
            ephemeral_writable_drives: true,
            firecracker_version: None,
            arch: std::env::consts::ARCH.to_string(),
            firecracker_binary_path: None,
            bridge_name: "svbr0".into(),
            subnet: "172.30.0.0/24".into(),
            base_image_cache_dir: None,
            max_stored_base_images: 2,
            base_image_manifest_url: None,
            base_image_manifest_path: None,
            socket_timeout: Duration::from_secs(5),
            stop_grace: Duration::from_secs(2),
            mirrors: Mirrors::default(),
            jailer: None,
        }
    }
}

impl SmartVmOptions {
    /// Defaults overridden by `SMARTVM_DATA_DIR`, `SMARTVM_RUNTIME_DIR`, `SMARTVM_FIRECRACKER_BIN`,
    /// `SMARTVM_BASE_IMAGE_MANIFEST_URL`/`_PATH` and the mirror variables of [`Mirrors::from_env`].
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by the same variables, read through `lookup` (testable without
    /// touching the process environment). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let d = Self::default();
        Self {
            data_dir: get("SMARTVM_DATA_DIR").map_or(d.data_dir, PathBuf::from),
            runtime_dir: get("SMARTVM_RUNTIME_DIR").map_or(d.runtime_dir, PathBuf::from),
            firecracker_binary_path: get("SMARTVM_FIRECRACKER_BIN").map(PathBuf::from),
            base_image_manifest_url: get("SMARTVM_BASE_IMAGE_MANIFEST_URL"),
            base_image_manifest_path: get("SMARTVM_BASE_IMAGE_MANIFEST_PATH").map(PathBuf::from),
            mirrors: Mirrors::from_lookup(&lookup),
            ..d
        }
    }

    /// The base-image cache dir.
    pub fn base_image_cache_dir(&self) -> PathBuf {
        self.base_image_cache_dir.clone().unwrap_or_else(|| self.data_dir.join("base-images"))
    }
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

/// The orchestrator: creates, tracks and cleans up VMs.
#[derive(Debug)]
pub struct SmartVm {
    options: SmartVmOptions,
    vms: Mutex<HashMap<String, Arc<MicroVm>>>,
    versions: Mutex<HashMap<PathBuf, FirecrackerVersion>>,
    network: std::sync::OnceLock<Arc<NetworkManager>>,
}

impl Default for SmartVm {
    fn default() -> Self {
        Self::new(SmartVmOptions::from_env())
    }
}

impl SmartVm {
    /// An orchestrator with `options`.
    pub fn new(options: SmartVmOptions) -> Self {
        Self {
            options,
            vms: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            network: std::sync::OnceLock::new(),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &SmartVmOptions {
        &self.options
    }

    /// The parent of all per-VM runtime dirs.
    pub fn runtime_dir(&self) -> &Path {
        &self.options.runtime_dir
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MicroVm>>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The image manager for this data dir, arch and mirrors.
    pub fn image_manager(&self) -> ImageManager {
        ImageManager::new(&self.options.data_dir, &self.options.arch, self.options.mirrors.clone())
    }

    /// The base-image manager (`INVALID_BASE_IMAGE_CACHE_LIMIT` when `max_stored_base_images` is 0).
    pub fn base_image_manager(&self) -> Result<BaseImageManager> {
        Ok(BaseImageManager::new(
            self.image_manager(),
            self.options.base_image_cache_dir(),
            self.options.max_stored_base_images,
        )?)
    }

    /// Resolves and caches a base-image bundle. The hosted preset falls back to the options'
    /// manifest URL/path.
    pub async fn ensure_base_image(
        &self,
        options: &BaseImageOptions,
        progress: &dyn Progress,
    ) -> Result<BaseImageBundle> {
        let mut options = options.clone();
        if options.manifest_url.is_none() && options.manifest_path.is_none() {
            options.manifest_url = self.options.base_image_manifest_url.clone();
            options.manifest_path = self.options.base_image_manifest_path.clone();
        }
        Ok(self.base_image_manager()?.ensure_base_image(&options, progress).await?)
    }

    /// Finds the binary locally, else downloads the configured version (default: the latest
    /// release) into `<data_dir>/bin/<version>/`.
    pub async fn ensure_binary(&self, progress: &dyn Progress) -> Result<PathBuf> {
        if let Ok(found) = self.find_binary() {
            return Ok(found);
        }
        if self.options.firecracker_binary_path.is_some() {
            return self.find_binary();
        }
        let images = self.image_manager();
        let version = match self.options.firecracker_version {
            Some(v) => v.to_string(),
            None => images.latest_version().await?,
        };
        Ok(images.ensure_firecracker(&version, progress).await?)
    }

    /// Finds the Firecracker binary without downloading (see [`binary_candidates`]);
    /// `BINARY_NOT_FOUND` lists every place searched and names `scripts/install-firecracker.sh`.
    pub fn find_binary(&self) -> Result<PathBuf> {
        let candidates = binary_candidates(&self.options, std::env::var_os("PATH").as_deref());
        candidates
            .iter()
            .find(|p| is_executable(p))
            .cloned()
            .ok_or(SmartVmError::BinaryNotFound { searched: candidates })
    }

    /// The version of `binary` (`firecracker --version`, run once per binary and cached).
    pub fn binary_version(&self, binary: &Path) -> Option<FirecrackerVersion> {
        let mut cache = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(binary) {
            return Some(*v);
        }
        let out = std::process::Command::new(binary).arg("--version").output().ok()?;
        let v = FirecrackerVersion::from_version_output(&String::from_utf8_lossy(&out.stdout))?;
        cache.insert(binary.to_path_buf(), v);
        Some(v)
    }

    /// Per-VM runtime options derived from these options and `binary`.
    pub fn runtime_options(&self, binary: PathBuf) -> VmRuntimeOptions {
        let mut o = VmRuntimeOptions::new(binary, &self.options.runtime_dir);
        o.firecracker_version = self.binary_version(&o.firecracker_binary);
        o.ephemeral_writable_drives = self.options.ephemeral_writable_drives;
        o.socket_timeout = self.options.socket_timeout;
        o.stop_plan = StopPlan::with_grace(self.options.stop_grace);
        o.jailer = self.options.jailer.clone();
        o
    }

    /// Validates `config` (cloned) and registers a VM in `Created` state; does not boot it.
    pub fn create_vm(&self, config: &VmConfig) -> Result<Arc<MicroVm>> {
        config.validate()?;
        let binary = self.find_binary()?;
        let mut options = self.runtime_options(binary);
        if config.network_interfaces.iter().any(|n| n.host_dev_name.is_none()) {
            options.network = Some(self.network()?);
        }
        self.register(MicroVm::from_validated(config, options))
    }

    /// The network manager for `bridge_name`/`subnet` (created on first use; validates them,
    /// touches nothing on the host until a TAP is needed).
    pub fn network(&self) -> Result<Arc<NetworkManager>> {
        if let Some(n) = self.network.get() {
            return Ok(n.clone());
        }
        let options = NetworkOptions {
            bridge_name: self.options.bridge_name.clone(),
            subnet: self.options.subnet.clone(),
            ..NetworkOptions::default()
        };
        let manager = Arc::new(NetworkManager::new(options)?);
        Ok(self.network.get_or_init(|| manager).clone())
    }

    /// Like [`create_vm`](Self::create_vm) with explicit runtime options.
    pub fn create_vm_with(&self, config: &VmConfig, options: VmRuntimeOptions) -> Result<Arc<MicroVm>> {
        self.register(MicroVm::new(config, options)?)
    }

    fn register(&self, vm: MicroVm) -> Result<Arc<MicroVm>> {
        let vm = Arc::new(vm);
        let mut reg = self.registry();
        if reg.contains_key(vm.id()) {
            return Err(ConfigErrors::single("id", format!("a VM with id {:?} already exists", vm.id())).into());
        }
        reg.insert(vm.id().to_string(), vm.clone());
        Ok(vm)
    }

    /// Registers a VM for `config` (its id names the new VM) and restores it from `snapshot`.
    /// On failure nothing stays registered or on disk.
    pub async fn restore_vm(&self, config: &VmConfig, snapshot: &Snapshot, resume: bool) -> Result<Arc<MicroVm>> {
        let vm = self.create_vm(config)?;
        if let Err(e) = vm.restore_snapshot(snapshot, resume, false).await {
            self.registry().remove(vm.id());
            return Err(e);
        }
        Ok(vm)
    }

    /// Snapshots a running VM by id into `dir` (see [`MicroVm::snapshot`]): one of this
    /// orchestrator's VMs, or one that another smartvm program runs in the same runtime dir
    /// (found through its journal). The VM is paused for the snapshot and resumed afterwards
    /// unless `keep_paused`.
    pub async fn snapshot_vm(&self, id: &str, dir: &Path, keep_paused: bool) -> Result<Snapshot> {
        if let Some(vm) = self.vm(id) {
            let was_running = vm.state() == crate::VmState::Running;
            if was_running {
                vm.pause().await?;
            }
            let snapshot = vm.snapshot(dir, None).await;
            if was_running && !keep_paused {
                vm.resume().await?;
            }
            return snapshot;
        }
        let vm_dir = self.options.runtime_dir.join(crate::staging::sanitize_path_part(id));
        let journal = VmJournal::read(&vm_dir)
            .map_err(|e| SmartVmError::io(format!("no VM {id:?} in {}", self.options.runtime_dir.display()), e))?;
        if !journal.process_alive() {
            return Err(SmartVmError::Snapshot(format!("VM {id:?} is not running")));
        }
        if journal.jail_dir.is_some() {
            return Err(SmartVmError::Snapshot("snapshot bundles of jailed VMs are not supported yet".into()));
        }
        let api = ApiClient::new(&journal.socket);
        let was_running = api.send(&GetInstanceInfo).await?.state == "Running";
        let set = |state| PatchVmState(VmStateBody { state });
        if was_running {
            api.send(&set(VmStateRequest::Paused)).await?;
        }
        let snapshot = crate::snapshot::write_bundle(&api, dir, None, &journal.staged, journal.config.as_ref()).await;
        if was_running && !keep_paused {
            api.send(&set(VmStateRequest::Resumed)).await?;
        }
        snapshot
    }

    /// Starts `count` VMs from one snapshot concurrently, with ids `<id>-<i>` (`id` from
    /// `config`, or `clone`). If any fails, all are cleaned up and the first error returned.
    pub async fn clone_vms(
        &self,
        config: &VmConfig,
        snapshot: &Snapshot,
        count: usize,
        resume: bool,
    ) -> Result<Vec<Arc<MicroVm>>> {
        let base = config.id.clone().unwrap_or_else(|| "clone".into());
        let configs: Vec<VmConfig> =
            (0..count).map(|i| VmConfig { id: Some(format!("{base}-{i}")), ..config.clone() }).collect();
        let results =
            futures_util::future::join_all(configs.iter().map(|c| self.restore_vm(c, snapshot, resume))).await;
        if results.iter().any(|r| r.is_err()) {
            let mut first = None;
            for r in results {
                match r {
                    Ok(vm) => {
                        let _ = self.remove_vm(vm.id()).await;
                    }
                    Err(e) if first.is_none() => first = Some(e),
                    Err(_) => {}
                }
            }
            return Err(first.unwrap_or(SmartVmError::Snapshot("clone failed".into())));
        }
        results.into_iter().collect()
    }

    /// A registered VM.
    pub fn vm(&self, id: &str) -> Option<Arc<MicroVm>> {
        self.registry().get(id).cloned()
    }

    /// Ids of registered VMs (sorted).
    pub fn vm_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.registry().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Number of registered VMs.
    pub fn vm_count(&self) -> usize {
        self.registry().len()
    }

    /// Cleans up and unregisters one VM.
    pub async fn remove_vm(&self, id: &str) -> Result<bool> {
        let vm = self.registry().remove(id);
        match vm {
            Some(vm) => vm.cleanup().await.map(|_| true),
            None => Ok(false),
        }
    }

    /// Stops every running or paused VM (errors are collected; the first is returned).
    pub async fn stop_all(&self) -> Result<()> {
        let vms: Vec<Arc<MicroVm>> = self.registry().values().cloned().collect();
        let results = futures_util::future::join_all(vms.iter().map(|vm| async move {
            if matches!(vm.state(), crate::VmState::Running | crate::VmState::Paused) {
                vm.stop().await.map(|_| ())
            } else {
                Ok(())
            }
        }))
        .await;
        results.into_iter().collect()
    }

    /// Cleans up and unregisters every VM, then removes the bridge and NAT table this
    /// orchestrator created.
    pub async fn cleanup(&self) -> Result<()> {
        let vms: Vec<Arc<MicroVm>> = self.registry().drain().map(|(_, v)| v).collect();
        let results = futures_util::future::join_all(vms.iter().map(|vm| vm.cleanup())).await;
        let vms_cleaned: Result<()> = results.into_iter().collect();
        if let Some(net) = self.network.get() {
            net.cleanup().await?;
        }
        vms_cleaned
    }

    /// Removes what crashed programs left in the runtime dir: every VM dir whose journaled
    /// Firecracker process is gone (and that no VM of this orchestrator owns). Returns the ids.
    pub async fn reclaim(&self) -> Result<Vec<String>> {
        let owned: Vec<PathBuf> = self.registry().values().map(|v| v.runtime_dir().to_path_buf()).collect();
        let entries = match std::fs::read_dir(&self.options.runtime_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SmartVmError::io("cannot list the runtime dir", e)),
        };
        let mut reclaimed = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            if owned.contains(&dir) {
                continue;
            }
            let Ok(journal) = VmJournal::read(&dir) else {
                continue;
            };
            if journal.process_alive() {
                if journal.owner_alive() {
                    continue; // a running program still owns this VM
                }
                // An orphan (its owner died and nothing killed it, e.g. a jailed VM whose
                // parent-death signal the jailer's privilege drop cleared): end it.
                if let Some(pid) = journal.pid {
                    crate::process::kill_and_wait(pid, Duration::from_secs(2));
                }
            }
            for f in &journal.extra_files {
                let _ = std::fs::remove_file(f);
            }
            for tap in &journal.taps {
                if let Err(e) = crate::network::delete_link(tap).await {
                    tracing::warn!(tap = %tap, error = %e, "could not remove a leftover TAP");
                }
            }
            if let Some(jail) = &journal.jail_dir {
                let _ = std::fs::remove_dir_all(jail);
            }
            for cgroup in &journal.cgroup_dirs {
                let _ = std::fs::remove_dir(cgroup);
            }
            std::fs::remove_dir_all(&dir)
                .map_err(|e| SmartVmError::io(format!("cannot remove {}", dir.display()), e))?;
            reclaimed.push(journal.vm_id);
        }
        Ok(reclaimed)
    }

    /// Opt-in: on SIGINT/SIGTERM, clean up every VM and exit (130/143). The library installs no
    /// signal handler unless this is called.
    pub fn cleanup_on_signals(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            let code = tokio::select! { _ = int.recv() => 130, _ = term.recv() => 143 };
            let _ = this.cleanup().await;
            std::process::exit(code);
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(o.mirrors.ci_artifacts, "http://mirror/ci");
        assert_eq!(o.base_image_cache_dir(), Path::new("/data/base-images"));
        let d = SmartVmOptions::from_lookup(|_| None);
        assert_eq!(
            (d.data_dir.as_path(), d.bridge_name.as_str(), d.max_stored_base_images),
            (Path::new("/tmp/.smartvm"), "svbr0", 2)
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

    #[test]
    fn missing_binary_names_the_script() {
        let vm = SmartVm::new(SmartVmOptions {
            data_dir: "/nonexistent-smartvm".into(),
            firecracker_binary_path: Some("/nonexistent-smartvm/fc".into()),
            ..Default::default()
        });
        let e = vm.find_binary().unwrap_err();
        assert_eq!(e.code(), "BINARY_NOT_FOUND");
        assert!(e.to_string().contains("install-firecracker.sh"));
    }
}
