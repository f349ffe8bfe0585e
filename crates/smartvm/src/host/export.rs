//! Files a jailed Firecracker makes inside its chroot (log, metrics, vsock socket), shown at the
//! paths the config names. While the VM runs, a symlink at the configured path points into the
//! chroot (a connect or a `tail -f` through it works); when the VM is unwound, a kept file (log,
//! metrics) replaces the link with its final contents and a socket's link is removed.
//!
//! The chroot belongs to the jail user, so nothing in it is trusted: the file is read through
//! [`open_file_beneath`](crate::trust::confine::open_file_beneath) (no symlinks, regular files
//! only), and the configured path is touched only while it is still the link smartvm made.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::unwind_error::UnwindError;
use crate::trust::confine::{open_file_beneath, relative_beneath, ConfineError};

/// What is at a configured path before the VM's link is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing.
    Nothing,
    /// The link to `target` (an earlier, interrupted attempt).
    OurLink,
    /// A regular file: its contents are carried into the chroot first.
    File,
    /// Anything else (a FIFO, a socket, a dir, a foreign link).
    Other,
}

/// What is at `link`, compared with the link to `target` smartvm would make.
pub(crate) fn existing(link: &Path, target: &Path) -> io::Result<Existing> {
    match std::fs::symlink_metadata(link) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(e) => Err(e),
        Ok(m) if m.file_type().is_symlink() => {
            Ok(if std::fs::read_link(link)? == target { Existing::OurLink } else { Existing::Other })
        }
        Ok(m) if m.is_file() => Ok(Existing::File),
        Ok(_) => Ok(Existing::Other),
    }
}

/// Makes `link` a symlink to `target`, atomically replacing what is there (a temporary link
/// renamed over it).
pub(crate) fn make_link(link: &Path, target: &Path) -> io::Result<()> {
    let tmp = sibling(link, "link")?;
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `.<name>.smartvm-<what>-<pid>` beside `path`.
fn sibling(path: &Path, what: &str) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    Ok(path.with_file_name(format!(".{}.smartvm-{what}-{}", name.to_string_lossy(), std::process::id())))
}

/// Undoes [`make_link`] when `link` is still the link to `target` (which must lie in
/// `jail_base`): with `keep`, the link is replaced by a copy of the target's contents; without,
/// it is removed. Anything else at `link` is left alone; what is gone counts as released.
pub(crate) fn release(link: &Path, target: &Path, keep: bool, jail_base: &Path) -> Result<(), UnwindError> {
    if relative_beneath(jail_base, target).is_none() {
        return Err(ConfineError::Outside { path: target.to_path_buf(), root: jail_base.to_path_buf() }.into());
    }
    match existing(link, target)? {
        Existing::Nothing => return Ok(()),
        Existing::OurLink => {}
        Existing::File | Existing::Other => return Err(UnwindError::NotOurs("the path is no longer smartvm's link")),
    }
    if !keep {
        return Ok(std::fs::remove_file(link)?);
    }
    let mut source = match open_file_beneath(jail_base, target) {
        Ok(f) => f,
        Err(ConfineError::Os { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(std::fs::remove_file(link)?);
        }
        Err(e) => return Err(e.into()),
    };
    let tmp = sibling(link, "copy")?;
    let copied = (|| {
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        io::copy(&mut source, &mut out)?;
        std::fs::rename(&tmp, link)
    })();
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_shows_the_live_file_and_is_replaced_by_its_contents() {
        let jail = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        let target = jail.path().join("vm/root/logger.log");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, b"line 1\n").unwrap();
        let link = user.path().join("vm.log");
        assert_eq!(existing(&link, &target).unwrap(), Existing::Nothing);
        make_link(&link, &target).unwrap();
        assert_eq!(existing(&link, &target).unwrap(), Existing::OurLink);
        make_link(&link, &target).unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), b"line 1\n", "reads go through to the live file");
        release(&link, &target, true, jail.path()).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file(), "the link became a file");
        assert_eq!(std::fs::read(&link).unwrap(), b"line 1\n");
        release(&link, &target, true, jail.path()).unwrap_err();
        assert_eq!(std::fs::read(&link).unwrap(), b"line 1\n", "a file at the path is never touched");
        let entries: Vec<_> = std::fs::read_dir(user.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary left");
    }

    #[test]
    fn a_planted_symlink_in_the_jail_is_not_followed_and_sockets_links_just_go() {
        let jail = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        let secret = user.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        let target = jail.path().join("logger.log");
        std::os::unix::fs::symlink(&secret, &target).unwrap();
        let link = user.path().join("vm.log");
        make_link(&link, &target).unwrap();
        assert!(release(&link, &target, true, jail.path()).is_err());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "left as it was");
        let outside = user.path().join("x.sock");
        assert!(release(&link, &outside, false, jail.path()).is_err(), "targets outside the jail base are refused");
        let sock = jail.path().join("vsock.sock");
        let sock_link = user.path().join("v.sock");
        make_link(&sock_link, &sock).unwrap();
        release(&sock_link, &sock, false, jail.path()).unwrap();
        assert!(std::fs::symlink_metadata(&sock_link).is_err());
        release(&sock_link, &sock, false, jail.path()).unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    }
}
