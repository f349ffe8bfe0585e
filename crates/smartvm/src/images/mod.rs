//! Images: Firecracker binaries, kernels and rootfs images ([`ImageManager`]), and bootable
//! base-image bundles with a verified, bounded cache ([`BaseImageManager`]).
//!
//! Layout under the data dir: `bin/<version>/{firecracker,jailer}`, `kernels/`, `rootfs/`,
//! `base-images/<bundleId>/`. Every remote location comes from [`Mirrors`], so an air-gapped host
//! can point smartvm at an internal mirror.

mod base;
mod ci_artifacts;
mod download;
mod inject;
mod mirrors;
mod release;
mod release_fetch;
mod rootfs;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use crate::error::ImageError;
pub use base::{
    eviction_plan, ArtifactLocation, BaseImageBundle, BaseImageManager, BaseImageOptions, BundleSource, CachedBundle,
    CachedFile, GuestAgent, HostedArtifact, HostedManifest, Preset, ResolvedArtifact,
};
pub use ci_artifacts::{
    parse_list, select as select_train_artifacts, train_of, train_prefix, ListPage, ListingError, TrainArtifacts,
};
pub use download::{hash_file, Downloaded, Downloader, Expect, NoProgress, Progress, TracingProgress};
pub use inject::{
    elf_interpreter, inject_guest_agent, inject_guest_agent_with, inject_plan, parse_stat, InjectReport, StatFields,
    Tolerate, GUEST_AGENT_PATH,
};
pub use mirrors::Mirrors;
pub use release::{
    checksum_for, is_sha256_hex, normalize_version, parse_checksum_lines, parse_latest_tag, ReleaseJsonError,
};
pub use release_fetch::ReleaseFetch;
pub use rootfs::{create_from_dir, create_from_dir_with, HostTool, HostToolError, HOST_TOOL_TIMEOUT};

pub(crate) use crate::trust::confine::check_file_name;

/// Firecracker binaries, kernels and rootfs images under one data dir.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> smartvm::Result<()> {
/// use smartvm::images::NoProgress;
/// use smartvm::{SmartVm, SmartVmOptions};
///
/// let smartvm = SmartVm::new(SmartVmOptions::from_env());
/// let images = smartvm.image_manager();
/// let binary = images.ensure_firecracker("v1.12.1", &NoProgress).await?; // verified, cached
/// println!("firecracker at {}", binary.display());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ImageManager {
    data_dir: PathBuf,
    arch: String,
    mirrors: Mirrors,
    downloader: Downloader,
}

impl ImageManager {
    /// A manager for `data_dir` and `arch` (`x86_64`/`aarch64`) using `mirrors`.
    pub fn new(data_dir: impl Into<PathBuf>, arch: impl Into<String>, mirrors: Mirrors) -> Self {
        Self { data_dir: data_dir.into(), arch: arch.into(), mirrors, downloader: Downloader::new() }
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// The architecture.
    pub fn arch(&self) -> &str {
        &self.arch
    }
    /// The mirrors in use.
    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }
    /// The HTTP client.
    pub fn downloader(&self) -> &Downloader {
        &self.downloader
    }
    /// `bin/<version>/`.
    pub fn bin_dir(&self, version: &str) -> PathBuf {
        self.data_dir.join("bin").join(normalize_version(version))
    }
    /// `bin/<version>/firecracker`.
    pub fn firecracker_path(&self, version: &str) -> PathBuf {
        self.bin_dir(version).join("firecracker")
    }
    /// `bin/<version>/jailer`.
    pub fn jailer_path(&self, version: &str) -> PathBuf {
        self.bin_dir(version).join("jailer")
    }
    /// `sockets/`: the seed's place for API sockets of lower-level, custom flows. VMs made by
    /// [`SmartVm::create_vm`](crate::SmartVm::create_vm) keep theirs in their runtime dir
    /// (`<runtime_dir>/<vm>/firecracker.sock`), as the seed's `createVM` does.
    pub fn sockets_dir(&self) -> PathBuf {
        self.data_dir.join("sockets")
    }
    /// `sockets/<vm_id>.sock`, the id sanitized to `[A-Za-z0-9._-]` (never `.` or `..`).
    pub fn socket_path(&self, vm_id: &str) -> PathBuf {
        self.sockets_dir().join(format!("{}.sock", crate::staging::sanitize_path_part(vm_id)))
    }
    /// `kernels/`.
    pub fn kernels_dir(&self) -> PathBuf {
        self.data_dir.join("kernels")
    }
    /// `rootfs/`.
    pub fn rootfs_dir(&self) -> PathBuf {
        self.data_dir.join("rootfs")
    }

    /// Creates `bin/`, `kernels/`, `rootfs/` and `sockets/` (private, `0700`, in a trusted data dir).
    pub fn ensure_directories(&self) -> Result<(), ImageError> {
        for d in [self.data_dir.join("bin"), self.kernels_dir(), self.rootfs_dir(), self.sockets_dir()] {
            self.ensure_private(&d)?;
        }
        Ok(())
    }

    /// Creates `dir` (and the data dir above it) `0700`, refusing dirs another user could write.
    fn ensure_private(&self, dir: &Path) -> Result<(), ImageError> {
        Ok(crate::trust::ensure_private_dir(dir)?)
    }

    /// The newest Firecracker release tag (`vX.Y.Z`) from the releases API.
    pub async fn latest_version(&self) -> Result<String, ImageError> {
        let url = self.mirrors.latest_release_url();
        let body = self.downloader.text(&url).await.map_err(|e| ImageError::VersionFetch {
            url: url.clone(),
            reason: "request failed".into(),
            source: Some(Box::new(e)),
        })?;
        parse_latest_tag(&body).map_err(|e| ImageError::VersionFetch {
            url,
            reason: e.to_string(),
            source: std::error::Error::source(&e).map(|s| s.to_string().into()),
        })
    }

    /// `bin/<version>/firecracker`, downloading the release when it is not there yet.
    pub async fn ensure_firecracker(&self, version: &str, progress: &dyn Progress) -> Result<PathBuf, ImageError> {
        let path = self.firecracker_path(version);
        if path.is_file() && self.jailer_path(version).is_file() {
            return Ok(path);
        }
        self.download_firecracker(version, progress).await
    }

    /// Downloads the release tarball of `version`, verifies it against its `.sha256.txt`,
    /// extracts `firecracker` and `jailer`, verifies them against the tarball's `SHA256SUMS`
    /// and installs them (0755) atomically into `bin/<version>/`.
    pub async fn download_firecracker(&self, version: &str, progress: &dyn Progress) -> Result<PathBuf, ImageError> {
        let version = normalize_version(version);
        let dir = self.bin_dir(&version);
        self.ensure_private(&dir)?;
        let result = self.download_into(&dir, &version, progress).await;
        if result.is_err() {
            let _ = std::fs::remove_dir(&dir); // only when empty: a failed download leaves no bin/<version>/
        }
        result
    }

    async fn download_into(&self, dir: &Path, version: &str, progress: &dyn Progress) -> Result<PathBuf, ImageError> {
        let url = self.mirrors.release_tarball_url(version, &self.arch);
        let tgz_name = format!("firecracker-{version}-{}.tgz", self.arch);
        let sums_url = format!("{url}.sha256.txt");
        let sums = self.downloader.text(&sums_url).await?;
        let sha = checksum_for(&sums, &tgz_name)
            .ok_or_else(|| ImageError::download(&sums_url, format!("no checksum for {tgz_name}")))?;
        let tarball = download::temp_beside(&dir.join(&tgz_name))
            .map_err(|e| ImageError::prepare(format!("cannot create a temporary file in {}", dir.display()), e))?;
        let expect = Expect { sha256: Some(sha), size: None };
        self.downloader.file(&url, tarball.path(), &expect, progress).await?;
        let (arch, tar_path, dest) = (self.arch.clone(), tarball.path().to_path_buf(), dir.to_path_buf());
        let v = version.to_string();
        tokio::task::spawn_blocking(move || install_from_tarball(&tar_path, &dest, &v, &arch))
            .await
            .map_err(|e| ImageError::prepare("extraction task failed", e))?
            .map_err(|e| ImageError::Download { url: url.clone(), reason: e.to_string(), source: Some(Box::new(e)) })?;
        drop(tarball);
        Ok(dir.join("firecracker"))
    }

    /// Downloads a kernel into `kernels/<name>`.
    pub async fn download_kernel(
        &self,
        url: &str,
        name: &str,
        expect: &Expect,
        progress: &dyn Progress,
    ) -> Result<PathBuf, ImageError> {
        self.download_named(url, &self.kernels_dir(), name, expect, progress).await
    }

    /// Downloads a rootfs image into `rootfs/<name>`.
    pub async fn download_rootfs(
        &self,
        url: &str,
        name: &str,
        expect: &Expect,
        progress: &dyn Progress,
    ) -> Result<PathBuf, ImageError> {
        self.download_named(url, &self.rootfs_dir(), name, expect, progress).await
    }

    async fn download_named(
        &self,
        url: &str,
        dir: &Path,
        name: &str,
        expect: &Expect,
        progress: &dyn Progress,
    ) -> Result<PathBuf, ImageError> {
        check_file_name(name).map_err(|e| ImageError::download(url, e.to_string()))?;
        self.ensure_private(dir)?;
        Ok(self.downloader.file(url, &dir.join(name), expect, progress).await?.path)
    }

    /// Creates `rootfs/<name>` as a sparse ext4 image of `size_mib` MiB.
    pub async fn create_blank_rootfs(&self, name: &str, size_mib: u64) -> Result<PathBuf, ImageError> {
        let path = self.rootfs_dir().join(name);
        check_file_name(name).map_err(|e| ImageError::RootfsCreate {
            path: path.clone(),
            message: e.to_string(),
            source: None,
        })?;
        self.ensure_directories()?;
        let p = path.clone();
        tokio::task::spawn_blocking(move || rootfs::create_blank(&p, size_mib))
            .await
            .map_err(|e| ImageError::prepare("mkfs task failed", e))??;
        Ok(path)
    }

    /// Copies `source` to `rootfs/<name>` (reflink, else hole-preserving).
    pub async fn clone_rootfs(&self, source: &Path, name: &str) -> Result<PathBuf, ImageError> {
        let target = self.rootfs_dir().join(name);
        if let Err(reason) = check_file_name(name) {
            let error = std::io::Error::new(std::io::ErrorKind::InvalidInput, reason.to_string());
            return Err(ImageError::RootfsClone { source_path: source.to_path_buf(), target, source: error });
        }
        self.ensure_directories()?;
        let (s, t) = (source.to_path_buf(), target.clone());
        tokio::task::spawn_blocking(move || rootfs::clone(&s, &t))
            .await
            .map_err(|e| ImageError::prepare("clone task failed", e))??;
        Ok(target)
    }
}

/// Release archives hold plain files and dirs with relative names: an entry that is absolute,
/// climbs with `..`, or is a symlink or hardlink refuses the whole archive.
fn check_tar_entry(path: &Path, kind: tar::EntryType) -> Result<(), TarballError> {
    use std::path::Component;
    let plain = path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        return Err(TarballError::Escapes(path.to_path_buf()));
    }
    if kind.is_symlink() || kind.is_hard_link() {
        return Err(TarballError::Link(path.to_path_buf()));
    }
    Ok(())
}

/// Why a release tarball was refused.
#[derive(Debug, thiserror::Error)]
enum TarballError {
    #[error("tarball entry {} escapes the archive", .0.display())]
    Escapes(PathBuf),
    #[error("tarball entry {} is a link", .0.display())]
    Link(PathBuf),
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("tarball has no {0}")]
    Missing(String),
    #[error("{name}: SHA-256 {actual} does not match SHA256SUMS {expected}")]
    Checksum { name: String, actual: String, expected: String },
}

/// Extracts and verifies `firecracker-<v>-<arch>` and `jailer-<v>-<arch>` from a release tarball.
fn install_from_tarball(tarball: &Path, dir: &Path, version: &str, arch: &str) -> Result<(), TarballError> {
    let io = |what: &'static str| move |e: std::io::Error| TarballError::Io(what, e);
    let file = std::fs::File::open(tarball).map_err(io("cannot open the tarball"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let wanted = [format!("firecracker-{version}-{arch}"), format!("jailer-{version}-{arch}")];
    let mut found: [Option<Vec<u8>>; 2] = [None, None];
    let mut sums = None;
    for entry in archive.entries().map_err(io("not a tar.gz"))? {
        let mut entry = entry.map_err(io("corrupt tarball"))?;
        let path = entry.path().map_err(io("corrupt tarball entry name"))?.into_owned();
        check_tar_entry(&path, entry.header().entry_type())?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let slot = wanted.iter().position(|w| *w == name);
        if slot.is_none() && name != "SHA256SUMS" {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(io("corrupt tarball entry"))?;
        match slot {
            Some(i) => found[i] = Some(data),
            None => sums = Some(String::from_utf8_lossy(&data).into_owned()),
        }
    }
    let sums = sums.ok_or_else(|| TarballError::Missing("SHA256SUMS".into()))?;
    let mut staged = Vec::new();
    for (want, data) in wanted.iter().zip(found) {
        let data = data.ok_or_else(|| TarballError::Missing(want.clone()))?;
        let expected =
            checksum_for(&sums, want).ok_or_else(|| TarballError::Missing(format!("SHA256SUMS entry {want}")))?;
        let actual = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&data))
        };
        if actual != expected {
            return Err(TarballError::Checksum { name: want.clone(), actual, expected });
        }
        let final_name = if want.starts_with("firecracker") { "firecracker" } else { "jailer" };
        let mut tmp = download::temp_beside(&dir.join(final_name)).map_err(io("cannot create a temporary file"))?;
        std::io::Write::write_all(&mut tmp, &data).map_err(io("cannot write a binary"))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).map_err(io("cannot chmod"))?;
        staged.push((tmp, dir.join(final_name)));
    }
    for (tmp, dest) in staged {
        tmp.persist(&dest).map_err(|e| TarballError::Io("cannot install a binary", e.error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_entries_that_escape_or_link_are_refused() {
        let ok = check_tar_entry(Path::new("release-v1/firecracker"), tar::EntryType::Regular);
        assert!(ok.is_ok());
        for (p, kind) in [
            ("../etc/passwd", tar::EntryType::Regular),
            ("release/../../x", tar::EntryType::Regular),
            ("/etc/passwd", tar::EntryType::Regular),
            ("release/firecracker", tar::EntryType::Symlink),
            ("release/jailer", tar::EntryType::Link),
        ] {
            assert!(check_tar_entry(Path::new(p), kind).is_err(), "{p} {kind:?}");
        }
    }
}
