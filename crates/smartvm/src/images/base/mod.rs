//! [`BaseImageManager`]: bootable kernel + rootfs bundles from presets (`latest`, `lts`) or a
//! hosted manifest, cached per bundle, verified before reuse, bounded by LRU eviction.

mod cache;
mod manifest;
mod options;

use std::path::{Path, PathBuf};

pub use cache::{eviction_plan, BundleSource, CachedBundle, CachedFile};
pub use manifest::{ArtifactLocation, GuestAgent, HostedArtifact, HostedManifest, ResolvedArtifact};
pub use options::{BaseImageOptions, Preset};

use super::ci_artifacts::{parse_list, select, train_of, train_prefix};
use super::download::{hash_file, Expect, Progress};
use super::ImageError;
use super::ImageManager;
use cache::{now_ms, BundleLock};

/// A local artifact must still lie below the manifest's dir once symlinks are resolved.
fn check_resolved_below(dir: &Path, field: &str, a: &ResolvedArtifact) -> Result<(), ImageError> {
    let ArtifactLocation::Path(p) = &a.location else { return Ok(()) };
    let (Ok(real_dir), Ok(real)) = (std::fs::canonicalize(dir), std::fs::canonicalize(p)) else {
        return Ok(()); // a missing file fails when it is copied, with its own error
    };
    if real.starts_with(&real_dir) && real != real_dir {
        Ok(())
    } else {
        Err(ImageError::manifest(field, format!("{} resolves outside {}", p.display(), dir.display())))
    }
}

/// A ready bundle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseImageBundle {
    /// Cache key.
    pub bundle_id: String,
    /// Preset it came from.
    pub preset: String,
    /// Kernel path.
    pub kernel_image_path: PathBuf,
    /// Rootfs path.
    pub rootfs_path: PathBuf,
    /// `ext4` or `squashfs`.
    pub rootfs_type: String,
    /// Attach the rootfs read-only.
    pub rootfs_is_read_only: bool,
    /// Kernel command line.
    pub boot_args: String,
    /// Firecracker version for this bundle.
    pub firecracker_version: String,
    /// SHA-256 of kernel and rootfs.
    pub kernel_sha256: String,
    /// SHA-256 of the rootfs.
    pub rootfs_sha256: String,
    /// Kernel size.
    pub kernel_size_bytes: u64,
    /// Rootfs size.
    pub rootfs_size_bytes: u64,
    /// Origin.
    pub source: BundleSource,
    /// Last use (ms since the epoch).
    pub last_accessed_at_ms: u64,
    /// The guest agent its rootfs carries, if its manifest declares one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_agent: Option<GuestAgent>,
}

impl BaseImageBundle {
    /// A VM booting this bundle: its kernel and boot arguments, its rootfs as the root drive
    /// (read-only when the bundle says so), 1 vCPU and 128 MiB.
    pub fn vm_config(&self) -> crate::config::VmConfig {
        let mut root = crate::config::DriveConfig::new("rootfs", &self.rootfs_path).root();
        root.is_read_only = self.rootfs_is_read_only;
        crate::config::VmConfig::new(&self.kernel_image_path)
            .with_boot_args(self.boot_args.clone())
            .with_machine(1, 128)
            .with_drive(root)
    }

    fn from_cached(dir: &Path, c: &CachedBundle) -> Self {
        Self {
            bundle_id: c.bundle_id.clone(),
            preset: c.preset.clone(),
            kernel_image_path: dir.join(&c.kernel.file_name),
            rootfs_path: dir.join(&c.rootfs.file_name),
            rootfs_type: c.rootfs_type.clone(),
            rootfs_is_read_only: c.rootfs_is_read_only,
            boot_args: c.boot_args.clone(),
            firecracker_version: c.firecracker_version.clone(),
            kernel_sha256: c.kernel.sha256.clone(),
            rootfs_sha256: c.rootfs.sha256.clone(),
            kernel_size_bytes: c.kernel.size_bytes,
            rootfs_size_bytes: c.rootfs.size_bytes,
            source: c.source.clone(),
            last_accessed_at_ms: c.last_accessed_at_ms,
            guest_agent: c.guest_agent.clone(),
        }
    }
}

/// Everything known about a bundle before fetching it.
#[derive(Debug, Clone)]
struct Resolved {
    bundle_id: String,
    preset: Preset,
    firecracker_version: String,
    rootfs_type: String,
    rootfs_is_read_only: bool,
    boot_args: String,
    kernel: ResolvedArtifact,
    rootfs: ResolvedArtifact,
    source: BundleSource,
    guest_agent: Option<GuestAgent>,
}

const CI_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off";
const LTS_TRAIN: &str = "v1.7";
const LTS_VERSION: &str = "v1.7.0";

fn sanitize_id(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect()
}

/// Bootable base-image bundles with a verified, bounded cache.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> smartvm::Result<()> {
/// use smartvm::images::{BaseImageOptions, NoProgress, Preset};
/// use smartvm::{SmartVm, SmartVmOptions};
///
/// let smartvm = SmartVm::new(SmartVmOptions::from_env());
/// let options = BaseImageOptions { preset: Some(Preset::Lts), ..Default::default() };
/// let bundle = smartvm.ensure_base_image(&options, &NoProgress).await?; // kernel + rootfs, SHA-256 checked
/// let vm = smartvm.create_vm(&bundle.vm_config().with_id("lts"))?;
/// vm.start().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BaseImageManager {
    images: ImageManager,
    cache_dir: PathBuf,
    max_stored: usize,
    /// The manifest URL and path used when a call names none (`with_hosted_manifest`).
    hosted_manifest: (Option<String>, Option<PathBuf>),
}

impl BaseImageManager {
    /// A manager caching under `cache_dir`, keeping at most `max_stored` (≥ 1) bundles.
    pub fn new(images: ImageManager, cache_dir: impl Into<PathBuf>, max_stored: usize) -> Result<Self, ImageError> {
        if max_stored < 1 {
            return Err(ImageError::InvalidCacheLimit(max_stored));
        }
        Ok(Self { images, cache_dir: cache_dir.into(), max_stored, hosted_manifest: (None, None) })
    }

    /// The manifest (URL, else path) for calls that name none, as the seed's manager-level
    /// `hostedManifestUrl`/`hostedManifestPath`: such calls resolve `hosted` unless they name
    /// another preset (see [`BaseImageOptions::effective_preset`]).
    pub fn with_hosted_manifest(mut self, url: Option<String>, path: Option<PathBuf>) -> Self {
        self.hosted_manifest = (url, path);
        self
    }

    /// `options` with this manager's manifest where they name none.
    fn with_defaults(&self, options: &BaseImageOptions) -> BaseImageOptions {
        let mut options = options.clone();
        if options.manifest_url.is_none() && options.manifest_path.is_none() {
            (options.manifest_url, options.manifest_path) = self.hosted_manifest.clone();
        }
        options
    }

    /// The cache dir.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// How many bundles the cache keeps (at least 1).
    pub fn max_stored_base_images(&self) -> usize {
        self.max_stored
    }

    /// Temporary dirs of downloads of `bundle` (any bundle without) that were cut short (a
    /// killed pull), with their bundle ids.
    fn partial_downloads(&self, bundle: Option<&str>) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.cache_dir) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let (id, _) = name.strip_prefix(".tmp-")?.rsplit_once('-')?;
                (bundle.is_none_or(|b| b == id)).then(|| (id.to_string(), e.path()))
            })
            .collect()
    }

    /// Removes what killed pulls left (`.tmp-<bundle>-…` dirs) of every bundle nobody is pulling
    /// now; returns the dirs removed.
    pub fn remove_partial_downloads(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for (id, dir) in self.partial_downloads(None) {
            let Ok(Some(_lock)) = BundleLock::try_acquire(&self.cache_dir, &id) else { continue };
            if crate::trust::confine::remove_beneath(&self.cache_dir, &dir, crate::trust::confine::Removal::Tree)
                .is_ok()
            {
                removed.push(dir);
            }
        }
        removed
    }

    /// Resolves, fetches (unless a verified copy is cached) and returns a bundle; then applies
    /// the retention limit, never evicting this bundle.
    pub async fn ensure_base_image(
        &self,
        options: &BaseImageOptions,
        progress: &dyn Progress,
    ) -> Result<BaseImageBundle, ImageError> {
        let options = &self.with_defaults(options);
        let resolved = self.resolve(options).await?;
        crate::trust::ensure_private_dir(&self.cache_dir)?;
        let (cache_dir, id) = (self.cache_dir.clone(), resolved.bundle_id.clone());
        let lock = tokio::task::spawn_blocking(move || BundleLock::acquire(&cache_dir, &id))
            .await
            .map_err(|e| ImageError::prepare("lock task failed", e))??;
        let dir = self.cache_dir.join(&resolved.bundle_id);
        // Holding the lock: any temporary dir of this bundle is a pull that was killed.
        for (_, stale) in self.partial_downloads(Some(&resolved.bundle_id)) {
            let _ =
                crate::trust::confine::remove_beneath(&self.cache_dir, &stale, crate::trust::confine::Removal::Tree);
        }
        let reusable = if options.force_download { None } else { self.verified(&dir).await };
        let mut cached = match reusable {
            Some(c) => c,
            None => self.fetch(&resolved, progress).await?,
        };
        cached.last_accessed_at_ms = now_ms();
        cached.write(&dir)?;
        drop(lock);
        let bundle = BaseImageBundle::from_cached(&dir, &cached);
        // Evicting as a side effect of a pull is worth a warning; an explicit prune reports itself.
        for id in self.prune(Some(&bundle.bundle_id))? {
            tracing::warn!(bundle = %id, limit = self.max_stored, "evicted least recently used base image");
        }
        Ok(bundle)
    }

    async fn verified(&self, dir: &Path) -> Option<CachedBundle> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let c = CachedBundle::read(&dir)?;
            if c.verify(&dir) {
                Some(c)
            } else {
                tracing::warn!(bundle = %c.bundle_id, "cached base image failed verification; fetching it again");
                None
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Fetches both artifacts into a fresh temporary dir and swaps it in (caller holds the lock).
    async fn fetch(&self, r: &Resolved, progress: &dyn Progress) -> Result<CachedBundle, ImageError> {
        // Private (0700), removed on any failure below.
        let tmp =
            tempfile::Builder::new().prefix(&format!(".tmp-{}-", r.bundle_id)).tempdir_in(&self.cache_dir).map_err(
                |e| ImageError::prepare(format!("cannot create a temporary dir in {}", self.cache_dir.display()), e),
            )?;
        let kernel = self.fetch_artifact(&r.kernel, tmp.path(), progress).await?;
        let rootfs = self.fetch_artifact(&r.rootfs, tmp.path(), progress).await?;
        let now = now_ms();
        let cached = CachedBundle {
            bundle_id: r.bundle_id.clone(),
            preset: r.preset.as_str().into(),
            arch: self.images.arch().into(),
            firecracker_version: r.firecracker_version.clone(),
            rootfs_type: r.rootfs_type.clone(),
            rootfs_is_read_only: r.rootfs_is_read_only,
            boot_args: r.boot_args.clone(),
            kernel,
            rootfs,
            source: r.source.clone(),
            guest_agent: r.guest_agent.clone(),
            created_at_ms: now,
            last_accessed_at_ms: now,
        };
        cached.write(tmp.path())?;
        let dir = self.cache_dir.join(&r.bundle_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ImageError::prepare(format!("cannot replace {}", dir.display()), e))?;
        }
        std::fs::rename(tmp.path(), &dir)
            .map_err(|e| ImageError::prepare(format!("cannot install {}", dir.display()), e))?;
        let _ = tmp.keep(); // renamed into place: nothing left to remove
        Ok(cached)
    }

    async fn fetch_artifact(
        &self,
        a: &ResolvedArtifact,
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<CachedFile, ImageError> {
        let dest = dir.join(&a.file_name);
        let expect = Expect { sha256: a.sha256.clone(), size: a.size };
        let (sha256, size) = match &a.location {
            ArtifactLocation::Url(url) => {
                // The seed's code for a base image: the download failure is the cause.
                let download = self.images.downloader().file(url, &dest, &expect, progress).await;
                let d = download.map_err(|e| ImageError::prepare(format!("cannot fetch {}", a.file_name), e))?;
                (d.sha256, d.size)
            }
            ArtifactLocation::Path(path) => {
                let (src, dst) = (path.clone(), dest.clone());
                tokio::task::spawn_blocking(move || {
                    crate::staging::stage_file(&src, &dst)
                        .map_err(|e| ImageError::prepare(format!("cannot copy {}", src.display()), e))?;
                    hash_file(&dst).map_err(|e| ImageError::prepare(format!("cannot hash {}", dst.display()), e))
                })
                .await
                .map_err(|e| ImageError::prepare("copy task failed", e))??
            }
        };
        let location = match &a.location {
            ArtifactLocation::Url(u) => u.clone(),
            ArtifactLocation::Path(p) => p.display().to_string(),
        };
        let mismatch = |what: String| ImageError::Prepare { message: format!("{location}: {what}"), source: None };
        if let Some(want) = expect.sha256.filter(|w| *w != sha256) {
            return Err(mismatch(format!("SHA-256 mismatch: got {sha256}, expected {want}")));
        }
        if let Some(want) = expect.size.filter(|w| *w != size) {
            return Err(mismatch(format!("size {size} bytes, expected {want}")));
        }
        Ok(CachedFile { file_name: a.file_name.clone(), sha256, size_bytes: size })
    }

    async fn resolve(&self, options: &BaseImageOptions) -> Result<Resolved, ImageError> {
        match options.effective_preset()? {
            Preset::Latest => {
                let version = self.images.latest_version().await?;
                let train = train_of(&version)
                    .ok_or_else(|| ImageError::Resolve(format!("release tag {version:?} has no train")))?;
                self.resolve_ci(Preset::Latest, &train, &version).await
            }
            Preset::Lts => self.resolve_ci(Preset::Lts, LTS_TRAIN, LTS_VERSION).await,
            Preset::Hosted => self.resolve_hosted(options).await,
        }
    }

    async fn resolve_ci(&self, preset: Preset, train: &str, version: &str) -> Result<Resolved, ImageError> {
        let arch = self.images.arch();
        let prefix = train_prefix(train, arch);
        let keys = self.list_keys(&prefix).await?;
        let picked = select(&keys, &prefix).map_err(|e| ImageError::Resolve(e.to_string()))?;
        let name = |k: &str| k.rsplit('/').next().unwrap_or(k).to_string();
        let (kernel_name, rootfs_name) = (name(&picked.kernel_key), name(&picked.rootfs_key));
        let mirrors = self.images.mirrors();
        let (kernel_url, rootfs_url) =
            (mirrors.artifact_url(&picked.kernel_key), mirrors.artifact_url(&picked.rootfs_key));
        let squashfs = picked.rootfs_type == "squashfs";
        let artifact = |url: &str, file_name: String| ResolvedArtifact {
            location: ArtifactLocation::Url(url.to_string()),
            file_name,
            sha256: None,
            size: None,
        };
        Ok(Resolved {
            bundle_id: sanitize_id(&format!("firecracker-ci-{train}-{arch}-{kernel_name}-{rootfs_name}")),
            preset,
            firecracker_version: version.to_string(),
            rootfs_type: picked.rootfs_type.to_string(),
            rootfs_is_read_only: squashfs,
            boot_args: if squashfs {
                format!("{CI_BOOT_ARGS} ro rootfstype=squashfs")
            } else {
                CI_BOOT_ARGS.to_string()
            },
            kernel: artifact(&kernel_url, kernel_name),
            // Firecracker's CI images carry no smartvm agent.
            guest_agent: None,
            rootfs: artifact(&rootfs_url, rootfs_name),
            source: BundleSource::FirecrackerCi { train: train.to_string(), kernel_url, rootfs_url },
        })
    }

    /// Every key under `prefix`, following continuation tokens.
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, ImageError> {
        let base = self.images.mirrors().ci_artifacts.clone();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let mut url = reqwest::Url::parse(&format!("{base}/"))
                .map_err(|e| ImageError::Resolve(format!("bad CI artifacts URL {base:?}: {e}")))?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("list-type", "2").append_pair("prefix", prefix);
                if let Some(t) = &token {
                    q.append_pair("continuation-token", t);
                }
            }
            let xml =
                self.images.downloader().text(url.as_str()).await.map_err(|e| ImageError::Resolve(e.to_string()))?;
            let page = parse_list(&xml).map_err(|e| {
                ImageError::Resolve(format!(
                    "{e}: {}",
                    std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()
                ))
            })?;
            keys.extend(page.keys);
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(keys),
            }
        }
        Err(ImageError::Resolve(format!("listing {prefix} did not end after 100 pages")))
    }

    async fn resolve_hosted(&self, options: &BaseImageOptions) -> Result<Resolved, ImageError> {
        let (text, location, base_dir) = match (&options.manifest_url, &options.manifest_path) {
            (Some(url), _) => {
                let text = self.images.downloader().text(url).await.map_err(|e| ImageError::ManifestFetch {
                    location: url.clone(),
                    reason: "download failed".into(),
                    source: Some(Box::new(e)),
                })?;
                (text, url.clone(), None)
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| ImageError::ManifestFetch {
                    location: path.display().to_string(),
                    reason: "cannot read".into(),
                    source: Some(Box::new(e)),
                })?;
                let dir = std::path::absolute(path).ok().and_then(|p| p.parent().map(Path::to_path_buf));
                (text, path.display().to_string(), dir)
            }
            (None, None) => {
                return Err(ImageError::ManifestFetch {
                    location: "<none>".into(),
                    reason: "the hosted preset needs a manifest URL or path".into(),
                    source: None,
                })
            }
        };
        let manifest = HostedManifest::parse(&text)?;
        let (kernel, rootfs) = manifest.validate(self.images.arch(), base_dir.as_deref())?;
        if let Some(dir) = &base_dir {
            for (field, a) in [("kernel.path", &kernel), ("rootfs.path", &rootfs)] {
                check_resolved_below(dir, field, a)?;
            }
        }
        let describe = |a: &ResolvedArtifact| match &a.location {
            ArtifactLocation::Url(u) => u.clone(),
            ArtifactLocation::Path(p) => p.display().to_string(),
        };
        Ok(Resolved {
            bundle_id: manifest.bundle_id.clone(),
            preset: Preset::Hosted,
            firecracker_version: manifest.firecracker_version.clone(),
            rootfs_type: manifest.rootfs_type.clone(),
            rootfs_is_read_only: manifest.rootfs_is_read_only,
            boot_args: manifest.boot_args.clone(),
            source: BundleSource::Hosted { manifest: location, kernel: describe(&kernel), rootfs: describe(&rootfs) },
            kernel,
            rootfs,
            guest_agent: manifest.guest_agent.clone(),
        })
    }

    /// Cached bundles, most recently used first.
    pub fn list(&self) -> Result<Vec<BaseImageBundle>, ImageError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.cache_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(ImageError::prepare(format!("cannot list {}", self.cache_dir.display()), e)),
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Some(c) = CachedBundle::read(&dir) {
                out.push(BaseImageBundle::from_cached(&dir, &c));
            }
        }
        out.sort_by(|a, b| {
            b.last_accessed_at_ms.cmp(&a.last_accessed_at_ms).then_with(|| a.bundle_id.cmp(&b.bundle_id))
        });
        Ok(out)
    }

    /// Applies the retention limit, never evicting `keep`; returns the evicted ids (each with a
    /// warning). A bundle another process is using (locked) is skipped.
    pub fn prune(&self, keep: Option<&str>) -> Result<Vec<String>, ImageError> {
        self.prune_to(self.max_stored, keep)
    }

    /// Like [`prune`](Self::prune) with an explicit limit (≥ 1).
    pub fn prune_to(&self, max: usize, keep: Option<&str>) -> Result<Vec<String>, ImageError> {
        if max < 1 {
            return Err(ImageError::InvalidCacheLimit(max));
        }
        let entries: Vec<(String, u64)> =
            self.list()?.into_iter().map(|b| (b.bundle_id, b.last_accessed_at_ms)).collect();
        let mut evicted = Vec::new();
        for id in eviction_plan(&entries, max, keep) {
            let Some(_lock) = BundleLock::try_acquire(&self.cache_dir, &id)? else { continue };
            let dir = self.cache_dir.join(&id);
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ImageError::prepare(format!("cannot evict {}", dir.display()), e))?;
            tracing::debug!(bundle = %id, limit = max, "evicted");
            evicted.push(id);
        }
        Ok(evicted)
    }
}
