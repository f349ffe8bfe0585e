//! Snapshot restore orchestration: a Diff snapshot is merged onto its base before loading, and
//! restored VMs get their own copies so one snapshot can seed many clones.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod output;

pub use output::SnapshotOutput;

use crate::config::SnapshotType;
use crate::error::{Result, SmartVmError, SnapshotError};
use crate::staging;

/// The on-disk form of a bundle's `snapshot.json`: paths relative to the bundle.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleFile {
    state_path: PathBuf,
    mem_path: PathBuf,
    kind: SnapshotType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_bundle: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    drives: Vec<SnapshotDrive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vm_config: Option<Box<crate::config::VmConfig>>,
}

/// Bundle metadata is small: refuse to read more than this.
const MAX_BUNDLE_FILE_BYTES: u64 = 16 << 20;

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(File::open(path)?, MAX_BUNDLE_FILE_BYTES + 1), &mut bytes)?;
    if bytes.len() as u64 > MAX_BUNDLE_FILE_BYTES {
        return Err(std::io::Error::other("larger than 16 MiB"));
    }
    Ok(bytes)
}

/// A file of a bundle: a regular file (not a link, FIFO or device: a FIFO as memory would hang
/// the restore), trusted-owned and not writable by others.
fn bundle_file(path: &Path, field: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| SnapshotError::BadBundle { path: path.to_path_buf(), what: format!("{field}: {e}") })?;
    if !meta.file_type().is_file() {
        let what = format!("{field} must be a regular file (not a link, FIFO or device)");
        return Err(SnapshotError::BadBundle { path: path.to_path_buf(), what }.into());
    }
    crate::trust::check(path, crate::trust::Expect::File)?;
    Ok(())
}

/// `p` (relative to `real_dir`, or an absolute path of an older bundle) resolved, symlinks
/// included, and required to lie inside `real_dir`.
fn confined(real_dir: &Path, p: &Path) -> std::io::Result<PathBuf> {
    let joined = real_dir.join(p);
    let real = std::fs::canonicalize(&joined)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", joined.display())))?;
    if real.starts_with(real_dir) && real != real_dir {
        Ok(real)
    } else {
        Err(std::io::Error::other(format!("{} points outside the bundle", p.display())))
    }
}

/// A snapshot: VM state + guest memory, and for a Diff its base. In memory paths are absolute;
/// on disk ([`save`](Self::save)/[`load`](Self::load)) they are relative to the bundle.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(smartvm: smartvm::SmartVm, vm: std::sync::Arc<smartvm::MicroVm>) -> smartvm::Result<()> {
/// use smartvm::snapshot::Snapshot;
///
/// vm.pause().await?;
/// let bundle = std::path::Path::new("/var/tmp/bundle");
/// vm.snapshot(bundle, None).await?; // state, memory, ephemeral drive copies, snapshot.json
/// let snapshot = Snapshot::load(bundle)?; // relocatable: paths are relative to the bundle
/// let config = snapshot.vm_config.as_deref().cloned().expect("the bundle carries its config");
/// let clones = smartvm.clone_vms(&config, &snapshot, 10, true).await?; // each with its own drives
/// # let _ = clones; Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// VM state file.
    pub state_path: PathBuf,
    /// Memory file (sparse for a Diff: only dirtied pages hold data).
    pub mem_path: PathBuf,
    /// Full or Diff.
    pub kind: SnapshotType,
    /// The snapshot a Diff applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Box<Snapshot>>,
    /// Copies of the VM's ephemeral drives as they were when the snapshot was taken; a
    /// restored VM gets its own copies of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<SnapshotDrive>,
    /// The configuration of the VM the snapshot was taken of (restores reuse it with a new id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<Box<crate::config::VmConfig>>,
}

/// One ephemeral drive saved with a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDrive {
    /// Drive id.
    pub drive_id: String,
    /// The staged file name Firecracker knew it by (`<driveId>-<file>`).
    pub file_name: String,
    /// The saved copy.
    pub path: PathBuf,
}

/// File name of the snapshot description written by [`MicroVm::snapshot`](crate::MicroVm::snapshot).
pub const SNAPSHOT_FILE: &str = "snapshot.json";

impl Snapshot {
    /// A Full snapshot.
    pub fn full(state_path: impl Into<PathBuf>, mem_path: impl Into<PathBuf>) -> Self {
        Self {
            state_path: state_path.into(),
            mem_path: mem_path.into(),
            kind: SnapshotType::Full,
            base: None,
            drives: vec![],
            vm_config: None,
        }
    }

    /// A Diff snapshot on top of `base`.
    pub fn diff(state_path: impl Into<PathBuf>, mem_path: impl Into<PathBuf>, base: Snapshot) -> Self {
        Self {
            state_path: state_path.into(),
            mem_path: mem_path.into(),
            kind: SnapshotType::Diff,
            base: Some(Box::new(base)),
            drives: vec![],
            vm_config: None,
        }
    }

    /// Reads `<dir>/snapshot.json`. The bundle names its files relative to `dir` (so it can be
    /// moved or copied); every path must stay inside `dir` once resolved, symlinks included
    /// (`SNAPSHOT_FAILED` otherwise). A Diff names its base bundle, loaded the same way.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_depth(dir, 0)
    }

    fn load_depth(dir: &Path, depth: usize) -> Result<Self> {
        if depth > 64 {
            return Err(SnapshotError::ChainTooDeep(64).into());
        }
        let path = dir.join(SNAPSHOT_FILE);
        let fail = |what: String| SnapshotError::BadBundle { path: path.clone(), what };
        if !dir.is_absolute() {
            return Err(fail("the bundle dir must be an absolute path".into()).into());
        }
        // StrictModes for bundles: the dir and every file in it trusted-owned and not writable
        // by others, the files regular (no link, FIFO or device).
        crate::trust::check(dir, crate::trust::Expect::Directory)?;
        bundle_file(&path, SNAPSHOT_FILE)?;
        let bytes = read_capped(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let file: BundleFile = serde_json::from_slice(&bytes).map_err(|e| fail(format!("not a snapshot: {e}")))?;
        let real_dir = std::fs::canonicalize(dir).map_err(|e| fail(format!("cannot resolve the bundle dir: {e}")))?;
        let inside = |field: &str, p: &Path| {
            let real = confined(&real_dir, p).map_err(|m| fail(format!("{field}: {m}")))?;
            bundle_file(&real_dir.join(p), field)?;
            Ok::<_, SmartVmError>(real)
        };
        let mut drives = Vec::new();
        for (i, d) in file.drives.iter().enumerate() {
            crate::trust::confine::check_file_name(&d.file_name)
                .map_err(|m| fail(format!("drives[{i}].fileName: {m}")))?;
            let path = inside(&format!("drives[{i}].path"), &d.path)?;
            drives.push(SnapshotDrive { drive_id: d.drive_id.clone(), file_name: d.file_name.clone(), path });
        }
        let base = match (&file.kind, &file.base_bundle) {
            (SnapshotType::Diff, Some(b)) => Some(Box::new(Self::load_depth(&dir.join(b), depth + 1)?)),
            (SnapshotType::Diff, None) => return Err(fail("a Diff bundle must name its baseBundle".into()).into()),
            (SnapshotType::Full, _) => None,
        };
        Ok(Self {
            state_path: inside("statePath", &file.state_path)?,
            mem_path: inside("memPath", &file.mem_path)?,
            kind: file.kind,
            base,
            drives,
            vm_config: file.vm_config,
        })
    }

    /// Writes `<dir>/snapshot.json` with every path relative to `dir` (state, memory and drive
    /// files must lie inside it; a Diff's base is named by its bundle dir).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(SNAPSHOT_FILE);
        let rel = |field: &str, p: &Path| {
            p.strip_prefix(dir).map(Path::to_path_buf).map_err(|_| SnapshotError::OutsideBundle {
                field: field.into(),
                path: p.to_path_buf(),
                bundle: dir.to_path_buf(),
            })
        };
        let mut drives = Vec::new();
        for d in &self.drives {
            drives.push(SnapshotDrive { path: rel("drive", &d.path)?, ..d.clone() });
        }
        let base_bundle = match &self.base {
            Some(b) => Some(
                b.state_path
                    .parent()
                    .map(Path::to_path_buf)
                    .ok_or_else(|| SnapshotError::BaseWithoutBundle(b.state_path.clone()))?,
            ),
            None => None,
        };
        let file = BundleFile {
            state_path: rel("statePath", &self.state_path)?,
            mem_path: rel("memPath", &self.mem_path)?,
            kind: self.kind,
            base_bundle,
            drives,
            vm_config: self.vm_config.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(SnapshotError::Encode)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| SnapshotError::File { action: "write", path: path.clone(), source })?;
        std::io::Write::write_all(&mut f, &bytes)
            .map_err(|source| SnapshotError::File { action: "write", path: path.clone(), source }.into())
    }

    /// Parameters that make [`MicroVm::create_snapshot`](crate::MicroVm::create_snapshot) write
    /// this snapshot (its kind decides Full or Diff).
    pub fn create_params(&self) -> crate::config::SnapshotCreateParams {
        crate::config::SnapshotCreateParams {
            snapshot_path: self.state_path.clone(),
            mem_file_path: self.mem_path.clone(),
            snapshot_type: self.kind,
        }
    }

    /// The chain of memory files, oldest (the Full base) first.
    pub fn memory_chain(&self) -> Result<Vec<&Path>> {
        let mut chain = vec![self.mem_path.as_path()];
        let mut cur = self;
        while cur.kind == SnapshotType::Diff {
            let base = cur.base.as_deref().ok_or_else(|| SnapshotError::DiffWithoutBase(cur.state_path.clone()))?;
            chain.push(base.mem_path.as_path());
            cur = base;
        }
        chain.reverse();
        Ok(chain)
    }

    /// Writes the memory this snapshot restores to into `dest` (which must not exist): a
    /// reflink/sparse copy of the Full base with every Diff's dirty ranges laid on top in order.
    pub fn materialize_memory(&self, dest: &Path) -> Result<()> {
        let chain = self.memory_chain()?;
        let fail = |action: &'static str, p: &Path, source: std::io::Error| SnapshotError::File {
            action,
            path: p.to_path_buf(),
            source,
        };
        staging::stage_file(chain[0], dest).map_err(|e| fail("copy", chain[0], e))?;
        let out = std::fs::OpenOptions::new().write(true).open(dest).map_err(|e| fail("open", dest, e))?;
        for diff in &chain[1..] {
            let src = File::open(diff).map_err(|e| fail("open", diff, e))?;
            let len = src.metadata().map_err(|e| fail("stat", diff, e))?.len();
            staging::copy_data_ranges(&src, &out, len).map_err(|e| fail("merge", diff, e))?;
        }
        Ok(())
    }
}

/// Writes a snapshot bundle of the paused VM behind `api` into `dir` (created; must not exist):
/// `vm.state`, `vm.mem`, copies of `staged` drives, and `snapshot.json`. Full without `base`,
/// else a Diff on top of it; Firecracker writes where `output` says. On failure `dir` is removed.
pub async fn write_bundle(
    api: &crate::api::ApiClient,
    output: &SnapshotOutput,
    dir: &Path,
    base: Option<&Snapshot>,
    staged: &[staging::StagedDrive],
    config: Option<&crate::config::VmConfig>,
) -> Result<Snapshot> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| SmartVmError::io(format!("cannot create {}", parent.display()), e))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| SmartVmError::io(format!("cannot create {}", dir.display()), e))?;
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    let mut snapshot = match base {
        Some(b) => Snapshot::diff(&state, &mem, b.clone()),
        None => Snapshot::full(&state, &mem),
    };
    snapshot.vm_config = config.map(|c| Box::new(c.clone()));
    let result = async {
        let fail = |source: std::io::Error| SnapshotError::File { action: "write", path: dir.to_path_buf(), source };
        let paths = output.prepare(&state, &mem).map_err(fail)?;
        let mut params = snapshot.create_params();
        (params.snapshot_path, params.mem_file_path) = paths.seen.clone();
        api.send(&crate::api::PutSnapshotCreate(params)).await?;
        output.collect(&paths, &state, &mem).map_err(fail)?;
        let drives_dir = dir.join("drives");
        for s in staged {
            if !drives_dir.exists() {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&drives_dir)
                    .map_err(|e| SmartVmError::io("cannot create the snapshot drives dir", e))?;
            }
            let file_name = s.staged.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let copy = drives_dir.join(&file_name);
            let (from, to) = (s.staged.clone(), copy.clone());
            tokio::task::spawn_blocking(move || staging::stage_file(&from, &to))
                .await
                .map_err(|e| SnapshotError::Task("drive copy", e))?
                .map_err(|source| SnapshotError::CopyDrive { drive_id: s.drive_id.clone(), source })?;
            snapshot.drives.push(SnapshotDrive { drive_id: s.drive_id.clone(), file_name, path: copy });
        }
        snapshot.save(dir)
    }
    .await;
    if let Err(e) = result {
        output.discard();
        let _ = std::fs::remove_dir_all(dir);
        return Err(e);
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn diff_ranges_overlay_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.mem");
        std::fs::write(&base, vec![b'b'; 3 * 4096]).unwrap();
        let diff = dir.path().join("diff.mem");
        let mut f = File::create(&diff).unwrap();
        f.set_len(3 * 4096).unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(&[b'd'; 4096]).unwrap();
        drop(f);
        let snap = Snapshot::diff(dir.path().join("d.state"), &diff, Snapshot::full(dir.path().join("b.state"), &base));
        assert_eq!(snap.memory_chain().unwrap(), [base.as_path(), diff.as_path()]);
        let out = dir.path().join("merged.mem");
        snap.materialize_memory(&out).unwrap();
        let merged = std::fs::read(&out).unwrap();
        assert!(merged[..4096].iter().all(|&b| b == b'b'));
        assert!(merged[4096..8192].iter().all(|&b| b == b'd'));
        assert!(merged[8192..].iter().all(|&b| b == b'b'));
        assert_eq!(std::fs::read(&base).unwrap(), vec![b'b'; 3 * 4096], "base untouched");
        let orphan = Snapshot { base: None, ..snap };
        assert_eq!(orphan.memory_chain().unwrap_err().code(), "SNAPSHOT_FAILED");
    }
}
