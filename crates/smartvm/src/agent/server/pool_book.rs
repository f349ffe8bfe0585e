//! The agent's record of its pools, so that a restarted agent makes them again and takes over
//! the VMs waiting in them: one file per pool, `<runtime_dir>/.pools/<name>.json`, holding the
//! request it was created with. Written only by the agent (a private dir, files `0600` renamed
//! into place); read only when the dir and the file are trusted (see [`crate::trust`]), opened
//! beneath the dir without following links.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::agent::wire::PoolRequest;
use crate::error::{Result, SmartVmError};

/// The pool book's dir inside the runtime dir (hidden: reclaim leaves it alone).
const POOL_BOOK_DIR: &str = ".pools";
/// Largest pool file read back (a config is at most 1 MiB).
const MAX_POOL_FILE: u64 = 2 << 20;

/// The pools an agent keeps across restarts.
pub(super) struct PoolBook {
    dir: PathBuf,
}

impl PoolBook {
    pub(super) fn new(runtime_dir: &Path) -> Self {
        Self { dir: runtime_dir.join(POOL_BOOK_DIR) }
    }

    /// Where pool `name` is recorded.
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Records `request` (its name already checked: a pool name is a plain file name).
    pub(super) fn save(&self, request: &PoolRequest) -> Result<()> {
        crate::trust::ensure_private_dir(&self.dir)?;
        let failed = |e: std::io::Error| SmartVmError::io(format!("cannot record pool {}", request.name), e);
        let json = serde_json::to_vec_pretty(request).map_err(|e| failed(e.into()))?;
        let tmp = self.dir.join(format!(".{}.{}", request.name, uuid::Uuid::new_v4().simple()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, self.file(&request.name)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(failed)
    }

    /// Forgets pool `name` (nothing to forget is fine).
    pub(super) fn forget(&self, name: &str) -> Result<()> {
        match std::fs::remove_file(self.file(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(SmartVmError::io(format!("cannot forget pool {name}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Every recorded pool, by name, and the files that could not be read back (left alone).
    pub(super) fn load(&self) -> (Vec<PoolRequest>, Vec<(PathBuf, SmartVmError)>) {
        let (mut pools, mut failed) = (Vec::new(), Vec::new());
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return (pools, failed) };
        if let Err(e) = crate::trust::check(&self.dir, crate::trust::Expect::Directory) {
            failed.push((self.dir.clone(), e.into()));
            return (pools, failed);
        }
        for path in entries.flatten().map(|e| e.path()) {
            let is_record = path.extension().is_some_and(|x| x == "json")
                && path.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'));
            if is_record {
                match self.read(&path) {
                    Ok(request) => pools.push(request),
                    Err(e) => failed.push((path, e)),
                }
            }
        }
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        (pools, failed)
    }

    fn read(&self, path: &Path) -> Result<PoolRequest> {
        crate::trust::check(path, crate::trust::Expect::File)?;
        let unreadable =
            |why: String| SmartVmError::io(format!("cannot read {}", path.display()), std::io::Error::other(why));
        let file = crate::trust::confine::open_file_beneath(&self.dir, path).map_err(|e| unreadable(e.to_string()))?;
        let mut text = String::new();
        file.take(MAX_POOL_FILE).read_to_string(&mut text).map_err(|e| unreadable(e.to_string()))?;
        let request: PoolRequest = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        if path.file_stem().is_none_or(|stem| *stem != *request.name) {
            return Err(unreadable(format!("it records pool {:?}", request.name)));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn request(name: &str) -> PoolRequest {
        let config = crate::VmConfig::new("/vmlinux");
        PoolRequest {
            name: name.into(),
            size: 2,
            refill_concurrency: None,
            config: Some(config),
            template: None,
            preconfigured: false,
        }
    }

    #[test]
    fn pools_are_recorded_read_back_and_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let book = PoolBook::new(tmp.path());
        book.save(&request("b")).unwrap();
        book.save(&request("a")).unwrap();
        let (pools, failed) = book.load();
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(pools, vec![request("a"), request("b")]);
        let mode = std::fs::metadata(book.file("a")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        book.forget("a").unwrap();
        book.forget("a").unwrap();
        assert_eq!(book.load().0, vec![request("b")]);
    }

    #[test]
    fn untrusted_or_mismatched_records_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let book = PoolBook::new(tmp.path());
        book.save(&request("good")).unwrap();
        // A file naming another pool, and one others may write.
        std::fs::write(book.file("renamed"), serde_json::to_vec(&request("other")).unwrap()).unwrap();
        book.save(&request("open")).unwrap();
        std::fs::set_permissions(book.file("open"), std::fs::Permissions::from_mode(0o666)).unwrap();
        let (pools, failed) = book.load();
        assert_eq!(pools, vec![request("good")]);
        let mut bad: Vec<_> =
            failed.iter().map(|(p, e)| (p.file_name().unwrap().to_owned(), e.code().as_str())).collect();
        bad.sort();
        assert_eq!(bad, vec![("open.json".into(), "UNTRUSTED_PATH"), ("renamed.json".into(), "IO_ERROR")]);
        // A book dir others may write is not read at all.
        std::fs::set_permissions(&book.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (pools, failed) = book.load();
        assert!(pools.is_empty());
        assert_eq!(failed[0].1.code(), crate::error::ErrorCode::UntrustedPath);
    }
}
