//! Ephemeral drive staging: writable drives get a private copy in the VM's runtime dir so guest
//! writes never reach the source image.
//!
//! [`plan`] decides (pure); [`stage_file`] copies: a reflink (`FICLONE`) where the filesystem
//! offers one, else a hole-preserving copy of only the data ranges (`SEEK_DATA`/`SEEK_HOLE` +
//! `copy_file_range`), so a 1 GiB sparse image holding 10 MiB costs about 10 MiB of tmpfs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::config::DriveConfig;

/// Staging failures.
#[derive(Debug, thiserror::Error)]
#[error("cannot stage drive {drive_id}: {action} {}", path.display())]
pub struct StagingError {
    /// The drive.
    pub drive_id: String,
    /// What was being done.
    pub action: &'static str,
    /// The file involved.
    pub path: PathBuf,
    /// OS error.
    #[source]
    pub source: std::io::Error,
}

/// One drive to copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedDrive {
    /// Drive id.
    pub drive_id: String,
    /// The caller's image.
    pub source: PathBuf,
    /// The private copy Firecracker gets.
    pub staged: PathBuf,
}

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Reflink: shared extents, copy-on-write.
    Reflink,
    /// Only the data ranges were copied; holes stay holes.
    Sparse,
}

/// Keeps only `[A-Za-z0-9._-]` (others become `_`); never `.` or `..` or empty.
pub fn sanitize_path_part(s: &str) -> String {
    let out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    match out.as_str() {
        "" | "." | ".." => format!("_{out}"),
        _ => out,
    }
}

/// Which drives to stage and where: `<drives_dir>/<driveId>-<file name>`.
pub fn plan(drives: &[DriveConfig], ephemeral_writable_drives: bool, drives_dir: &Path) -> Vec<StagedDrive> {
    drives
        .iter()
        .filter(|d| d.is_staged(ephemeral_writable_drives))
        .map(|d| {
            let file =
                d.path_on_host.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "drive".into());
            StagedDrive {
                drive_id: d.drive_id.clone(),
                source: d.path_on_host.clone(),
                staged: drives_dir.join(sanitize_path_part(&format!("{}-{}", d.drive_id, file))),
            }
        })
        .collect()
}

mod ioctl {
    nix::ioctl_write_int!(ficlone, 0x94, 9);
}
use ioctl::ficlone;

/// Copies `source` to `dest` (which must not exist, created `0600`: a private copy never
/// widens who may read the data), preserving holes; reflink when possible. `source` must be a
/// regular file or a block device, and opening it never blocks (a FIFO is refused).
pub fn stage_file(source: &Path, dest: &Path) -> std::io::Result<CopyMethod> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let src = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(source)?;
    let meta = src.metadata()?;
    if !(meta.is_file() || meta.file_type().is_block_device()) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file or block device"));
    }
    let len = if meta.is_file() { meta.len() } else { block_device_size(&src)? };
    let dst = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest)?;
    let result = copy_into(&src, &dst, len);
    if result.is_err() {
        drop(dst);
        let _ = std::fs::remove_file(dest);
    }
    result
}

fn block_device_size(f: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(len)
}

fn copy_into(src: &File, dst: &File, len: u64) -> std::io::Result<CopyMethod> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are valid for the call.
    if unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as _) }.is_ok() {
        return Ok(CopyMethod::Reflink);
    }
    dst.set_len(len)?;
    copy_data_ranges(src, dst, len)?;
    dst.sync_data().or_else(|e| if e.raw_os_error() == Some(libc::EINVAL) { Ok(()) } else { Err(e) })?;
    Ok(CopyMethod::Sparse)
}

/// Copies the data ranges of `src` (up to `len`) to the same offsets in `dst`; holes in `src`
/// are skipped, leaving whatever `dst` has there (holes in a fresh file, base data when
/// overlaying a Diff snapshot onto its base).
pub(crate) fn copy_data_ranges(src: &File, dst: &File, len: u64) -> std::io::Result<()> {
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        let data = match nix::unistd::lseek(src.as_raw_fd(), pos, nix::unistd::Whence::SeekData) {
            Ok(off) => off,
            Err(nix::Error::ENXIO) => break, // only a hole remains
            Err(e) => return Err(e.into()),
        };
        let hole =
            nix::unistd::lseek(src.as_raw_fd(), data, nix::unistd::Whence::SeekHole).map_err(std::io::Error::from)?;
        copy_range(src, dst, data, hole - data)?;
        pos = hole;
    }
    Ok(())
}

fn copy_range(src: &File, dst: &File, start: i64, mut len: i64) -> std::io::Result<()> {
    let (mut off_in, mut off_out) = (start, start);
    while len > 0 {
        match nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), len as usize) {
            Ok(0) => break,
            Ok(n) => len -= n as i64,
            // Across filesystems (e.g. an image on disk, the runtime dir on tmpfs) the kernel may
            // refuse copy_file_range: copy the rest of the range through a buffer.
            Err(nix::Error::EXDEV | nix::Error::ENOSYS | nix::Error::EOPNOTSUPP | nix::Error::EINVAL) => {
                return copy_range_buffered(src, dst, off_in as u64, len as u64);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_buffered(src: &File, dst: &File, mut offset: u64, mut len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    while len > 0 {
        let want = buf.len().min(len as usize);
        let n = src.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], offset)?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Stages every planned drive; on failure removes the copies already made.
pub fn execute(plan: &[StagedDrive]) -> Result<(), StagingError> {
    for (i, s) in plan.iter().enumerate() {
        if let Err(source) = stage_file(&s.source, &s.staged) {
            for done in &plan[..i] {
                let _ = std::fs::remove_file(&done.staged);
            }
            return Err(StagingError {
                drive_id: s.drive_id.clone(),
                action: "copying",
                path: s.source.clone(),
                source,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn plan_follows_policy_and_sanitizes() {
        let drives = vec![
            DriveConfig::new("root", "/img/root fs.ext4").root(),
            DriveConfig::new("ro", "/img/ro.ext4").read_only(),
            DriveConfig::new("keep", "/img/keep.ext4").ephemeral(false),
        ];
        let p = plan(&drives, true, Path::new("/run/vm/drives"));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].staged, Path::new("/run/vm/drives/root-root_fs.ext4"));
        assert!(plan(&drives, false, Path::new("/d")).is_empty());
        assert_eq!(sanitize_path_part(".."), "_..");
        assert_eq!(sanitize_path_part("a/b"), "a_b");
    }

    #[test]
    fn sparse_gib_image_costs_only_its_data_on_tmpfs() {
        let base = if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm") } else { Path::new("/tmp") };
        let dir = tempfile::tempdir_in(base).unwrap();
        let src = dir.path().join("src.img");
        let mut f = File::create(&src).unwrap();
        f.set_len(1 << 30).unwrap();
        let chunk = vec![0xabu8; 1 << 20];
        for mib in [0u64, 100, 512, 1000] {
            f.seek(SeekFrom::Start(mib << 20)).unwrap();
            for _ in 0..2 {
                f.write_all(&chunk).unwrap();
            }
        }
        drop(f);
        let dst = dir.path().join("dst.img");
        stage_file(&src, &dst).unwrap();
        let meta = std::fs::metadata(&dst).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        let allocated = meta.blocks() * 512;
        assert!(allocated <= 12 << 20, "copy allocates {allocated} bytes for 8 MiB of data");
        assert!(allocated >= 8 << 20);
        let (a, b) = (std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(a == b, "copy differs from source");
        assert!(stage_file(&src, &dst).is_err(), "existing destination must not be overwritten");
    }

    #[test]
    fn copies_across_filesystems_preserving_holes() {
        // Source on the disk, copy on tmpfs: the common case (images on disk, runtime on /dev/shm).
        if !Path::new("/dev/shm").is_dir() {
            return;
        }
        let disk =
            tempfile::tempdir_in(std::env::var_os("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, Into::into))
                .unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let src = disk.path().join("src.img");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(&[7u8; 3 << 20]).unwrap();
        drop(f);
        let dst = shm.path().join("dst.img");
        stage_file(&src, &dst).unwrap();
        assert!(std::fs::read(&src).unwrap() == std::fs::read(&dst).unwrap());
        assert!(std::fs::metadata(&dst).unwrap().blocks() * 512 <= 5 << 20, "holes kept");
    }

    #[test]
    fn failed_stage_removes_earlier_copies() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.img");
        std::fs::write(&good, b"data").unwrap();
        let p = vec![
            StagedDrive { drive_id: "a".into(), source: good, staged: dir.path().join("a-copy") },
            StagedDrive { drive_id: "b".into(), source: dir.path().join("missing"), staged: dir.path().join("b-copy") },
        ];
        let err = execute(&p).unwrap_err();
        assert_eq!(err.drive_id, "b");
        assert!(!dir.path().join("a-copy").exists() && !dir.path().join("b-copy").exists());
    }
}
