//! Removing files only beneath a root, never following a symlink on the way (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, then `*at` calls on directory descriptors). This is
//! how a journal's paths are acted on: whatever a journal says, nothing outside smartvm's own
//! directories is touched, and a symlink planted inside them only removes the link.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// Why a confined removal was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The path is not strictly below the root (or climbs with `..`).
    #[error("{} is outside {}", path.display(), root.display())]
    Outside {
        /// The path.
        path: PathBuf,
        /// The root it had to be under.
        root: PathBuf,
    },
    /// An OS call failed (a symlink on the way surfaces as `ELOOP`/`EXDEV`).
    #[error("cannot act on {}", path.display())]
    Os {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `path` relative to `root`, when strictly below it with only normal components.
pub fn relative_beneath<'a>(root: &Path, path: &'a Path) -> Option<&'a Path> {
    let rel = path.strip_prefix(root).ok()?;
    let normal = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && rel.components().next().is_some()).then_some(rel)
}

/// A name that is not a plain file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} must be a plain file name")]
pub struct NotAFileName(pub String);

/// A plain file name: no separators, not `.`/`..`, not empty.
pub fn check_file_name(name: &str) -> Result<(), NotAFileName> {
    let bad = name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']);
    if bad {
        Err(NotAFileName(name.to_string()))
    } else {
        Ok(())
    }
}

/// What to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A file, symlink or socket; a directory with everything in it.
    Tree,
    /// An empty directory only (`rmdir`, e.g. a cgroup).
    EmptyDir,
}

/// Removes `path`, which must lie strictly beneath `root`. No symlink is followed: one on the
/// way fails the call, one at the end is removed itself. Returns false when nothing was there.
pub fn remove_beneath(root: &Path, path: &Path, how: Removal) -> Result<bool, ConfineError> {
    let outside = || ConfineError::Outside { path: path.to_path_buf(), root: root.to_path_buf() };
    let rel = relative_beneath(root, path).ok_or_else(outside)?;
    let name = rel.file_name().ok_or_else(outside)?;
    let os = |e: nix::Error| ConfineError::Os { path: path.to_path_buf(), source: e.into() };
    let root_fd = match open_dir(None, root) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(false),
        Err(e) => return Err(os(e)),
    };
    let parent_rel = rel.parent().filter(|p| !p.as_os_str().is_empty());
    let parent_fd = match parent_rel {
        Some(p) => match open_dir(Some(root_fd.as_raw_fd()), p) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => return Ok(false),
            Err(e) => return Err(os(e)),
        },
        None => root_fd,
    };
    let result = match how {
        Removal::Tree => remove_tree_at(parent_fd.as_raw_fd(), name),
        Removal::EmptyDir => nix::unistd::unlinkat(Some(parent_fd.as_raw_fd()), name, UnlinkatFlags::RemoveDir),
    };
    match result {
        Ok(()) => Ok(true),
        Err(nix::Error::ENOENT) => Ok(false),
        Err(e) => Err(os(e)),
    }
}

/// Opens the regular file `path` for reading, which must lie strictly beneath `root`, without
/// following any symlink and without blocking (a FIFO planted there is refused, not waited on).
pub fn open_file_beneath(root: &Path, path: &Path) -> Result<std::fs::File, ConfineError> {
    let outside = || ConfineError::Outside { path: path.to_path_buf(), root: root.to_path_buf() };
    let rel = relative_beneath(root, path).ok_or_else(outside)?;
    let os = |e: nix::Error| ConfineError::Os { path: path.to_path_buf(), source: e.into() };
    let root_fd = open_dir(None, root).map_err(os)?;
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    let fd = nix::fcntl::openat2(root_fd.as_raw_fd(), rel, OpenHow::new().flags(flags).resolve(resolve)).map_err(os)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        Ok(_) => Err(os(nix::Error::EINVAL)),
        Err(e) => Err(ConfineError::Os { path: path.to_path_buf(), source: e }),
    }
}

/// Opens a directory: `root` itself without following a final symlink, or `rel` beneath `at`
/// without any symlink and without leaving it.
fn open_dir(at: Option<RawFd>, path: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let how = OpenHow::new().flags(flags).resolve(match at {
        Some(_) => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        None => ResolveFlag::empty(),
    });
    let fd = nix::fcntl::openat2(at.unwrap_or(libc::AT_FDCWD), path, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Removes `name` in `dir`: unlink for anything but a directory, else its contents first.
fn remove_tree_at(dir: RawFd, name: &OsStr) -> nix::Result<()> {
    // Anything but a directory (a symlink included, never followed) goes with one unlink.
    match nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir) {
        Err(nix::Error::EISDIR | nix::Error::EPERM) => {}
        done => return done,
    }
    let st = fstatat(Some(dir), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir);
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let mut sub = nix::dir::Dir::openat(Some(dir), name, flags, Mode::empty())?;
    let entries: Vec<std::ffi::OsString> = sub
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .map(std::os::unix::ffi::OsStringExt::from_vec)
        .collect();
    let sub_fd = sub.as_raw_fd();
    for entry in &entries {
        remove_tree_at(sub_fd, entry)?;
    }
    drop(sub);
    nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_beneath_the_root_and_never_through_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("vm/drives")).unwrap();
        std::fs::write(r.join("vm/drives/d.img"), b"d").unwrap();
        std::os::unix::fs::symlink(&victim, r.join("vm/link")).unwrap();
        std::os::unix::fs::symlink(&victim, r.join("linkdir")).unwrap();

        // Outside the root, or climbing out of it: refused.
        assert!(matches!(remove_beneath(r, &victim, Removal::Tree), Err(ConfineError::Outside { .. })));
        let climb = r.join("vm/../../x");
        assert!(matches!(remove_beneath(r, &climb, Removal::Tree), Err(ConfineError::Outside { .. })));
        assert!(matches!(remove_beneath(r, r, Removal::Tree), Err(ConfineError::Outside { .. })));
        // Through a symlinked directory: refused.
        let through = r.join("linkdir/keep");
        assert!(matches!(remove_beneath(r, &through, Removal::Tree), Err(ConfineError::Os { .. })));
        // A tree holding a symlink: the link goes, its target stays.
        assert!(remove_beneath(r, &r.join("vm"), Removal::Tree).unwrap());
        assert!(!r.join("vm").exists());
        assert!(victim.join("keep").exists(), "target of a symlink inside the tree survives");
        // A symlink as the path itself: only the link goes.
        assert!(remove_beneath(r, &r.join("linkdir"), Removal::Tree).unwrap());
        assert!(victim.join("keep").exists());
        assert!(!remove_beneath(r, &r.join("gone"), Removal::Tree).unwrap(), "missing is fine");
        std::fs::create_dir_all(r.join("cg/x")).unwrap();
        assert!(remove_beneath(r, &r.join("cg"), Removal::EmptyDir).is_err(), "rmdir of a non-empty dir");
        assert!(remove_beneath(r, &r.join("cg/x"), Removal::EmptyDir).unwrap());
    }
}
