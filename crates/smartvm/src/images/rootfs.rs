//! Blank and cloned root filesystems. `mkfs.ext4` and `debugfs` (e2fsprogs) are the host tools
//! smartvm runs here: no crate writes ext4, so each is one small typed command.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ImageError;

/// A host command smartvm runs, with its arguments built in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTool {
    /// `mkfs.ext4 -F -q <path>`: format a file as ext4.
    MkfsExt4 {
        /// The image file.
        path: PathBuf,
    },
    /// `mkfs.ext4 -F -q -d <dir> <path>`: format a file as ext4 holding a copy of `dir`.
    MkfsExt4FromDir {
        /// The image file.
        path: PathBuf,
        /// The tree to copy in.
        dir: PathBuf,
    },
    /// `debugfs [-w] -R <request> <image>`: one request against an unmounted ext4 image, no
    /// loop mount (how the guest agent is installed into a rootfs).
    Debugfs {
        /// The image file.
        image: PathBuf,
        /// The request (`write SRC DST`, `sif PATH mode 0100755`, `stat PATH`, …).
        request: String,
        /// Open the image for writing.
        write: bool,
    },
}

/// How long a host tool may run.
pub const HOST_TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A host tool that could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum HostToolError {
    /// It could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish in time (it was killed).
    #[error("{program} did not finish within {} s", HOST_TOOL_TIMEOUT.as_secs())]
    TimedOut {
        /// The program.
        program: String,
    },
    /// It exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl HostTool {
    /// The command to run (pure).
    pub fn command(&self) -> Command {
        match self {
            HostTool::MkfsExt4 { path } => {
                let mut c = Command::new("mkfs.ext4");
                c.args(["-F", "-q"]).arg(path);
                c
            }
            HostTool::MkfsExt4FromDir { path, dir } => {
                let mut c = Command::new("mkfs.ext4");
                c.args(["-F", "-q", "-d"]).arg(dir).arg(path);
                c
            }
            HostTool::Debugfs { image, request, write } => {
                let mut c = Command::new("debugfs");
                if *write {
                    c.arg("-w");
                }
                c.arg("-R").arg(request).arg(image);
                c
            }
        }
    }

    /// Runs it (bounded by [`HOST_TOOL_TIMEOUT`]); a non-zero exit becomes an error carrying stderr.
    pub fn run(&self) -> Result<(), HostToolError> {
        self.output().map(drop)
    }

    /// Runs it and returns what it printed (stdout, stderr); a non-zero exit is an error.
    pub fn output(&self) -> Result<(String, String), HostToolError> {
        let program = self.command().get_program().to_string_lossy().into_owned();
        let out = crate::process::output_within(&mut self.command(), HOST_TOOL_TIMEOUT)
            .map_err(|source| HostToolError::Spawn { program: program.clone(), source })?
            .ok_or_else(|| HostToolError::TimedOut { program: program.clone() })?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status.success() {
            return Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr));
        }
        Err(HostToolError::Failed { program, status: out.status, stderr })
    }
}

/// Creates `path` as a sparse `size_mib` MiB ext4 image. Nothing remains on failure.
pub fn create_blank(path: &Path, size_mib: u64) -> Result<(), ImageError> {
    create(path, size_mib, HostTool::MkfsExt4 { path: path.to_path_buf() }, HostTool::run)
}

/// Creates `path` as a sparse ext4 image holding a copy of the tree `dir`, with `spare_mib` MiB
/// free beyond what the tree takes. Nothing remains on failure.
pub fn create_from_dir(path: &Path, dir: &Path, spare_mib: u64) -> Result<(), ImageError> {
    create_from_dir_with(path, dir, spare_mib, HostTool::run)
}

/// [`create_from_dir`], running `mkfs.ext4` through `run`: for a process whose children another
/// part reaps (a containerd shim reaps every child itself, so `waitpid` on one of ours may find
/// it gone).
pub fn create_from_dir_with(
    path: &Path,
    dir: &Path,
    spare_mib: u64,
    run: impl FnOnce(&HostTool) -> Result<(), HostToolError>,
) -> Result<(), ImageError> {
    let bytes = tree_bytes(dir).map_err(|e| ImageError::RootfsCreate {
        path: path.to_path_buf(),
        message: format!("cannot read {}", dir.display()),
        source: Some(Box::new(e)),
    })?;
    // ext4's own metadata takes some of the image: a fifth on top of the tree, rounded up.
    let size_mib = (bytes + bytes / 5).div_ceil(1 << 20) + spare_mib.max(8);
    create(path, size_mib, HostTool::MkfsExt4FromDir { path: path.to_path_buf(), dir: dir.to_path_buf() }, run)
}

/// The bytes a tree's files take, counted in 4 KiB blocks (links and directories one each).
fn tree_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        total += meta.len().div_ceil(4096).max(1) * 4096;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(total)
}

fn create(
    path: &Path,
    size_mib: u64,
    tool: HostTool,
    run: impl FnOnce(&HostTool) -> Result<(), HostToolError>,
) -> Result<(), ImageError> {
    let fail = |message: String, source: Option<std::io::Error>| ImageError::RootfsCreate {
        path: path.to_path_buf(),
        message,
        source: source.map(|e| Box::new(e) as _),
    };
    if size_mib == 0 {
        return Err(fail("size must be at least 1 MiB".into(), None));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| fail("cannot create the file".into(), Some(e)))?;
    let result =
        file.set_len(size_mib << 20).map_err(|e| fail("cannot size the file".into(), Some(e))).and_then(|_| {
            run(&tool).map_err(|e| ImageError::RootfsCreate {
                path: path.to_path_buf(),
                message: e.to_string(),
                source: Some(Box::new(e)),
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Copies `source` to `target` (reflink, else hole-preserving).
pub fn clone(source: &Path, target: &Path) -> Result<(), ImageError> {
    crate::staging::stage_file(source, target).map(|_| ()).map_err(|e| ImageError::RootfsClone {
        source_path: source.to_path_buf(),
        target: target.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn mkfs_command_line() {
        let c = HostTool::MkfsExt4 { path: "/x/r.ext4".into() }.command();
        assert_eq!(c.get_program(), "mkfs.ext4");
        assert_eq!(c.get_args().collect::<Vec<_>>(), ["-F", "-q", "/x/r.ext4"]);
    }

    #[test]
    fn blank_ext4_is_sparse_and_cloneable() {
        if std::process::Command::new("mkfs.ext4").arg("-V").output().is_err() {
            assert!(std::env::var("SMARTVM_REQUIRE_KVM").is_err(), "mkfs.ext4 missing in CI");
            eprintln!("SKIPPED: mkfs.ext4 not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("blank.ext4");
        create_blank(&img, 64).unwrap();
        let meta = std::fs::metadata(&img).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hostname"), "from-a-dir\n").unwrap();
        let filled = dir.path().join("filled.ext4");
        create_from_dir(&filled, &tree, 8).unwrap();
        let cat =
            std::process::Command::new("debugfs").args(["-R", "cat /etc/hostname"]).arg(&filled).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&cat.stdout), "from-a-dir\n");
        assert!(create_from_dir(&dir.path().join("x.ext4"), &dir.path().join("absent"), 8).is_err());
        assert!(!dir.path().join("x.ext4").exists());
        assert!(meta.blocks() * 512 < 16 << 20, "sparse: {} bytes allocated", meta.blocks() * 512);
        let bytes = std::fs::read(&img).unwrap();
        assert_eq!(&bytes[1024 + 56..1024 + 58], &[0x53, 0xef], "ext4 superblock magic");
        assert_eq!(create_blank(&img, 8).unwrap_err().code(), "ROOTFS_CREATE_FAILED", "never overwrites");
        assert_eq!(create_blank(&dir.path().join("zero"), 0).unwrap_err().code(), "ROOTFS_CREATE_FAILED");
        assert!(!dir.path().join("zero").exists());
        let copy = dir.path().join("copy.ext4");
        clone(&img, &copy).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);
        assert_eq!(
            clone(&dir.path().join("missing"), &dir.path().join("c2")).unwrap_err().code(),
            "ROOTFS_CLONE_FAILED"
        );
    }
}
