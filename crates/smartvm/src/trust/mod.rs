//! Trust checks for what smartvm executes and where it keeps its state, in the manner of
//! OpenSSH's `StrictModes` and sudo: as root, never run a binary or trust a directory that a
//! third user could have written.
//!
//! A path is *trusted* when it and every directory above it are owned by root or by the
//! effective user and are not writable by group or others. A root-owned sticky directory that
//! everyone may write to (`/tmp`, `/dev/shm`) is accepted as a parent only: everything below it
//! must itself be owned and private, so nobody else can have created or swapped it.
//!
//! [`ensure_private_dir`] creates smartvm's own directories with mode `0700` in the `mkdir`
//! call itself (no window in which they are wider), and [`confine`] removes files only beneath
//! a given root without following symlinks.

pub mod confine;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a path is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustProblem {
    /// Owned by a user other than root or the current one.
    ForeignOwner,
    /// Writable by group or others (and not an acceptable sticky parent).
    Writable,
    /// Not the kind of file expected (e.g. a directory where a binary was expected).
    WrongKind,
    /// Not executable.
    NotExecutable,
}

/// A path that failed a trust check: `UNTRUSTED_PATH`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("refusing to trust {} (owner uid {owner}, mode {mode:04o}): {}; {}", path.display(), problem_text(*problem), hint)]
pub struct TrustError {
    /// The offending path (the file itself or one of its parents).
    pub path: PathBuf,
    /// Its owner.
    pub owner: u32,
    /// Its permission bits.
    pub mode: u32,
    /// What is wrong.
    pub problem: TrustProblem,
    /// How to fix it.
    pub hint: String,
}

fn problem_text(p: TrustProblem) -> &'static str {
    match p {
        TrustProblem::ForeignOwner => "it is owned by another user",
        TrustProblem::Writable => "group or others may write to it",
        TrustProblem::WrongKind => "it is not the kind of file expected",
        TrustProblem::NotExecutable => "it is not executable",
    }
}

/// The users whose files smartvm trusts: root and the effective user.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// What a path is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A directory smartvm keeps state in.
    Directory,
    /// A program smartvm executes.
    Executable,
    /// A file smartvm reads and acts on (a journal).
    File,
}

/// Checks `path` and every directory above it (see the module docs). Symlinks along the way
/// must be trusted-owned, and the path they lead to is checked as well.
pub fn check(path: &Path, expect: Expect) -> Result<(), TrustError> {
    let abs = absolute(path);
    let saw_link = walk(&abs, expect)?;
    if saw_link {
        let real = std::fs::canonicalize(&abs).map_err(|_| wrong_kind(&abs, 0, 0))?;
        walk(&real, expect)?;
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Checks every prefix of `abs` with `lstat`; true when a symlink was passed.
fn walk(abs: &Path, expect: Expect) -> Result<bool, TrustError> {
    let mut prefix = PathBuf::new();
    let mut saw_link = false;
    let components: Vec<Component> = abs.components().collect();
    for (i, c) in components.iter().enumerate() {
        prefix.push(c);
        let last = i + 1 == components.len();
        let meta = std::fs::symlink_metadata(&prefix).map_err(|_| wrong_kind(&prefix, 0, 0))?;
        let (owner, mode) = (meta.uid(), meta.mode() & 0o7777);
        if !trusted_owner(owner) {
            return Err(untrusted(&prefix, owner, mode, TrustProblem::ForeignOwner));
        }
        if meta.file_type().is_symlink() {
            saw_link = true;
            continue;
        }
        let sticky_parent = !last && meta.is_dir() && owner == 0 && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_parent {
            return Err(untrusted(&prefix, owner, mode, TrustProblem::Writable));
        }
        if last && !saw_link {
            check_kind(&prefix, &meta, expect)?;
        }
    }
    Ok(saw_link)
}

fn check_kind(path: &Path, meta: &std::fs::Metadata, expect: Expect) -> Result<(), TrustError> {
    let (owner, mode) = (meta.uid(), meta.mode() & 0o7777);
    let kind_ok = match expect {
        Expect::Directory => meta.is_dir(),
        Expect::Executable | Expect::File => meta.is_file(),
    };
    if !kind_ok {
        return Err(wrong_kind(path, owner, mode));
    }
    if expect == Expect::Executable && meta.permissions().mode() & 0o111 == 0 {
        return Err(untrusted(path, owner, mode, TrustProblem::NotExecutable));
    }
    Ok(())
}

fn wrong_kind(path: &Path, owner: u32, mode: u32) -> TrustError {
    untrusted(path, owner, mode, TrustProblem::WrongKind)
}

fn untrusted(path: &Path, owner: u32, mode: u32, problem: TrustProblem) -> TrustError {
    let p = path.display();
    let hint = match problem {
        TrustProblem::ForeignOwner => format!("make it owned by root or by you (chown root {p}), or use another path"),
        TrustProblem::Writable => format!("remove group/other write access (chmod go-w {p}), or use another path"),
        TrustProblem::WrongKind if owner == 0 && mode == 0 => "check that it exists".into(),
        TrustProblem::WrongKind => "check the path".into(),
        TrustProblem::NotExecutable => format!("make it executable (chmod 0755 {p})"),
    };
    TrustError { path: path.to_path_buf(), owner, mode, problem, hint }
}

/// Creates `dir` (and missing parents) with mode `0700` set by `mkdir` itself, then checks
/// that it can be trusted. An existing dir owned by the current user is narrowed to `0700`;
/// one owned by someone else, or writable by others, is refused.
pub fn ensure_private_dir(dir: &Path) -> Result<(), EnsureDirError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| EnsureDirError::Create { path: dir.to_path_buf(), source })?;
    check(dir, Expect::Directory)?;
    let meta = std::fs::metadata(dir).map_err(|source| EnsureDirError::Create { path: dir.to_path_buf(), source })?;
    if meta.mode() & 0o077 != 0 && meta.uid() == nix::unistd::geteuid().as_raw() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| EnsureDirError::Create { path: dir.to_path_buf(), source })?;
    }
    Ok(())
}

/// Failure of [`ensure_private_dir`].
#[derive(Debug, thiserror::Error)]
pub enum EnsureDirError {
    /// The directory could not be created or narrowed.
    #[error("cannot create {}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// It exists but cannot be trusted.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn owned_private_paths_pass_and_writable_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fc");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        chmod(&bin, 0o755);
        check(&bin, Expect::Executable).unwrap();
        chmod(&bin, 0o757);
        let e = check(&bin, Expect::Executable).unwrap_err();
        assert_eq!((e.problem, e.path.as_path(), e.mode), (TrustProblem::Writable, bin.as_path(), 0o757));
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        chmod(&bin, 0o644);
        assert_eq!(check(&bin, Expect::Executable).unwrap_err().problem, TrustProblem::NotExecutable);
        chmod(&bin, 0o755);
        chmod(dir.path(), 0o777);
        let e = check(&bin, Expect::Executable).unwrap_err();
        assert_eq!((e.problem, e.path.as_path()), (TrustProblem::Writable, dir.path()), "a writable parent");
        chmod(dir.path(), 0o700);
        assert_eq!(check(dir.path(), Expect::Executable).unwrap_err().problem, TrustProblem::WrongKind);
        assert_eq!(check(&dir.path().join("missing"), Expect::File).unwrap_err().problem, TrustProblem::WrongKind);
    }

    #[test]
    fn foreign_owner_and_links_to_foreign_files_fail() {
        if !nix::unistd::geteuid().is_root() {
            return; // chown to another user needs root
        }
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fc");
        std::fs::write(&bin, b"x").unwrap();
        chmod(&bin, 0o755);
        std::os::unix::fs::chown(&bin, Some(65534), Some(65534)).unwrap();
        let e = check(&bin, Expect::Executable).unwrap_err();
        assert_eq!((e.problem, e.owner), (TrustProblem::ForeignOwner, 65534));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        assert_eq!(check(&link, Expect::Executable).unwrap_err().problem, TrustProblem::ForeignOwner);
    }

    #[test]
    fn private_dirs_are_created_0700_and_foreign_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        ensure_private_dir(&d).unwrap();
        for p in [dir.path().join("a"), d.clone()] {
            assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o700, "{}", p.display());
        }
        chmod(&d, 0o755);
        ensure_private_dir(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700, "narrowed");
        chmod(&d, 0o777);
        assert!(matches!(ensure_private_dir(&d), Err(EnsureDirError::Untrusted(_))));
        if nix::unistd::geteuid().is_root() {
            chmod(&d, 0o700);
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            let Err(EnsureDirError::Untrusted(e)) = ensure_private_dir(&d) else { panic!("foreign dir trusted") };
            assert_eq!(e.problem, TrustProblem::ForeignOwner);
        }
    }
}
