//! The base-image cache: one directory per bundle with a local `manifest.json`, per-bundle
//! lock files, verification before reuse and least-recently-used eviction.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::super::{download::hash_file, ImageError};

/// Name of the local manifest inside a bundle dir.
pub const LOCAL_MANIFEST: &str = "manifest.json";

/// Where a bundle came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum BundleSource {
    /// Firecracker's CI artifact bucket.
    #[serde(rename_all = "camelCase")]
    FirecrackerCi {
        /// CI train (`v1.12`).
        train: String,
        /// Kernel URL.
        kernel_url: String,
        /// Rootfs URL.
        rootfs_url: String,
    },
    /// A hosted manifest.
    #[serde(rename_all = "camelCase")]
    Hosted {
        /// Manifest URL or path.
        manifest: String,
        /// Kernel URL or path.
        kernel: String,
        /// Rootfs URL or path.
        rootfs: String,
    },
}

/// One cached file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedFile {
    /// Name inside the bundle dir.
    pub file_name: String,
    /// SHA-256 recorded when it was fetched.
    pub sha256: String,
    /// Size recorded when it was fetched.
    pub size_bytes: u64,
}

/// The local `manifest.json` of a cached bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedBundle {
    /// Bundle id (the dir name).
    pub bundle_id: String,
    /// `latest`, `lts` or `hosted`.
    pub preset: String,
    /// Architecture.
    pub arch: String,
    /// Firecracker version for the bundle.
    pub firecracker_version: String,
    /// `ext4` or `squashfs`.
    pub rootfs_type: String,
    /// Mount read-only.
    pub rootfs_is_read_only: bool,
    /// Kernel command line.
    pub boot_args: String,
    /// Kernel file.
    pub kernel: CachedFile,
    /// Rootfs file.
    pub rootfs: CachedFile,
    /// Origin.
    pub source: BundleSource,
    /// The guest agent the rootfs carries (hosted manifests may declare one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_agent: Option<super::GuestAgent>,
    /// Creation time (ms since the epoch).
    pub created_at_ms: u64,
    /// Last use (ms since the epoch): the LRU key.
    pub last_accessed_at_ms: u64,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl CachedBundle {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(dir.join(LOCAL_MANIFEST)).ok()?).ok()
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), ImageError> {
        let tmp = dir.join(format!(".{LOCAL_MANIFEST}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| ImageError::prepare("cannot encode manifest", e))?;
        std::fs::write(&tmp, bytes).map_err(|e| ImageError::prepare(format!("cannot write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, dir.join(LOCAL_MANIFEST)).map_err(|e| ImageError::prepare("cannot install manifest", e))
    }

    /// True when both files exist with the recorded size and SHA-256.
    pub fn verify(&self, dir: &Path) -> bool {
        [&self.kernel, &self.rootfs].iter().all(|f| {
            let path = dir.join(&f.file_name);
            std::fs::metadata(&path).is_ok_and(|m| m.len() == f.size_bytes)
                && hash_file(&path).is_ok_and(|(sha, _)| sha == f.sha256)
        })
    }
}

/// Which bundles to evict so that at most `keep` remain: least recently used first, never
/// `protect`. `entries` are (bundle id, last access).
pub fn eviction_plan(entries: &[(String, u64)], keep: usize, protect: Option<&str>) -> Vec<String> {
    let mut sorted: Vec<&(String, u64)> = entries.iter().collect();
    // Most recent first; ties broken by id for a stable plan.
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut kept = usize::from(protect.is_some_and(|p| entries.iter().any(|(id, _)| id == p)));
    let mut evict = Vec::new();
    for (id, _) in sorted {
        if Some(id.as_str()) == protect {
            continue;
        }
        if kept < keep {
            kept += 1;
        } else {
            evict.push(id.clone());
        }
    }
    evict
}

/// An exclusive lock on one bundle (released on drop). Serializes processes working on it.
/// The lock file goes with the lock when the bundle does not exist (a failed fetch, an
/// eviction): it is unlinked while held, and whoever waited on the unlinked file sees that its
/// path no longer names that file and locks afresh.
pub struct BundleLock {
    lock: Flock<File>,
    path: PathBuf,
    bundle_dir: PathBuf,
}

fn lock_path(cache_dir: &Path, bundle_id: &str) -> PathBuf {
    cache_dir.join(".locks").join(format!("{bundle_id}.lock"))
}

fn open_lock(path: &Path) -> Result<File, ImageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ImageError::prepare(format!("cannot create {}", dir.display()), e))?;
    }
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ImageError::prepare(format!("cannot open {}", path.display()), e))
}

/// True when `path` still names the file `lock` holds.
fn still_linked(lock: &Flock<File>, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (lock.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
        _ => false,
    }
}

impl BundleLock {
    /// Waits for the lock (blocking: call from a blocking context).
    pub fn acquire(cache_dir: &Path, bundle_id: &str) -> Result<Self, ImageError> {
        Self::take(cache_dir, bundle_id, FlockArg::LockExclusive)?.ok_or_else(|| {
            ImageError::prepare("cannot lock bundle", std::io::Error::from(std::io::ErrorKind::WouldBlock))
        })
    }

    /// Takes the lock only if nobody holds it.
    pub fn try_acquire(cache_dir: &Path, bundle_id: &str) -> Result<Option<Self>, ImageError> {
        Self::take(cache_dir, bundle_id, FlockArg::LockExclusiveNonblock)
    }

    fn take(cache_dir: &Path, bundle_id: &str, how: FlockArg) -> Result<Option<Self>, ImageError> {
        let path = lock_path(cache_dir, bundle_id);
        loop {
            let lock = match Flock::lock(open_lock(&path)?, how) {
                Ok(lock) => lock,
                Err((_, nix::Error::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(ImageError::prepare("cannot lock bundle", e)),
            };
            if still_linked(&lock, &path) {
                let bundle_dir = cache_dir.join(bundle_id);
                return Ok(Some(Self { lock, path, bundle_dir }));
            }
        }
    }
}

impl Drop for BundleLock {
    fn drop(&mut self) {
        if !self.bundle_dir.exists() && still_linked(&self.lock, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, t: u64) -> (String, u64) {
        (id.to_string(), t)
    }

    #[test]
    fn evicts_least_recently_used_and_never_the_protected() {
        let entries = vec![e("a", 10), e("b", 30), e("c", 20), e("d", 5)];
        assert_eq!(eviction_plan(&entries, 2, None), ["a", "d"]);
        assert_eq!(eviction_plan(&entries, 1, Some("d")), ["b", "c", "a"]);
        assert_eq!(eviction_plan(&entries, 4, None), Vec::<String>::new());
        assert_eq!(eviction_plan(&entries, 1, Some("missing")), ["c", "a", "d"]);
        assert_eq!(eviction_plan(&[e("x", 1), e("y", 1)], 1, None), ["y"], "ties broken by id");
    }

    #[test]
    fn try_lock_sees_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = BundleLock::acquire(dir.path(), "b").unwrap();
        // flock locks belong to open file descriptions: a second open conflicts even in-process.
        assert!(BundleLock::try_acquire(dir.path(), "b").unwrap().is_none());
        drop(held);
        let lock = dir.path().join(".locks/b.lock");
        assert!(!lock.exists(), "no bundle: the lock file goes with the lock");
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let again = BundleLock::try_acquire(dir.path(), "b").unwrap().expect("free");
        drop(again);
        assert!(lock.exists(), "a bundle's lock file stays");
    }

    #[test]
    fn a_waiter_on_an_unlinked_lock_file_locks_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let held = BundleLock::acquire(dir.path(), "b").unwrap();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || BundleLock::acquire(&path, "b"));
        // Dropping unlinks the file the waiter may be blocked on; it must end on a linked one.
        drop(held);
        let got = waiter.join().unwrap().unwrap();
        let now = std::fs::metadata(dir.path().join(".locks/b.lock")).expect("the waiter's lock file is linked");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(now.ino(), got.lock.metadata().unwrap().ino(), "the waiter holds the file its path names");
    }
}
