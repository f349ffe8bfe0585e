//! Installing the guest agent (`smartvm-guest`) into an ext4 rootfs image, without a loop
//! mount: each change is one `debugfs` request (e2fsprogs) against the unmounted image. The
//! image must not be in use (mounted, or the disk of a running VM) while this runs.
//!
//! Boot the result with `init=/sbin/smartvm-guest` on the kernel command line (or keep the
//! image's own init and start the agent as a service); the agent listens on vsock port 10700.

use std::path::{Path, PathBuf};

use object::read::elf::{ElfFile64, ProgramHeader};

use super::{HostTool, ImageError};

/// Where the agent is installed in the image.
pub const GUEST_AGENT_PATH: &str = "/sbin/smartvm-guest";

/// What an installation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectReport {
    /// The image.
    pub rootfs: PathBuf,
    /// The agent's path inside it.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The interpreter an x86_64/aarch64 ELF executable asks for (`None`: static, it runs in any
/// rootfs); an error when the bytes are not a 64-bit ELF file.
pub fn elf_interpreter(bytes: &[u8]) -> Result<Option<String>, object::read::Error> {
    let elf = ElfFile64::<object::Endianness>::parse(bytes)?;
    for header in elf.elf_program_headers() {
        if let Some(interp) = header.interpreter(elf.endian(), bytes)? {
            return Ok(Some(String::from_utf8_lossy(interp).trim_end_matches('\0').to_owned()));
        }
    }
    Ok(None)
}

/// The `debugfs` requests that install `agent` (pure): make `/sbin` (it may exist), remove an
/// old agent (it may not exist), write the new one, then root:root 0755.
pub fn inject_plan(rootfs: &Path, agent: &Path) -> Vec<(HostTool, Tolerate)> {
    let request = |request: String, write: bool| HostTool::Debugfs { image: rootfs.to_path_buf(), request, write };
    let target = GUEST_AGENT_PATH;
    vec![
        (request("mkdir /sbin".into(), true), Tolerate::Errors),
        (request(format!("rm {target}"), true), Tolerate::Errors),
        (request(format!("write \"{}\" {target}", agent.display()), true), Tolerate::Nothing),
        (request(format!("sif {target} mode 0100755"), true), Tolerate::Nothing),
        (request(format!("sif {target} uid 0"), true), Tolerate::Nothing),
        (request(format!("sif {target} gid 0"), true), Tolerate::Nothing),
    ]
}

/// Whether a request's complaints are expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerate {
    /// It may fail (the directory exists, there is no old file).
    Errors,
    /// Any complaint is a failure.
    Nothing,
}

/// Installs `agent` (a static executable) at [`GUEST_AGENT_PATH`] in the ext4 image `rootfs`.
pub fn inject_guest_agent(rootfs: &Path, agent: &Path) -> Result<InjectReport, ImageError> {
    inject_guest_agent_with(rootfs, agent, HostTool::output)
}

/// As [`inject_guest_agent`], with `run` running each `debugfs` request and returning its
/// (stdout, stderr): for a process that reaps its children itself (a containerd shim).
pub fn inject_guest_agent_with(
    rootfs: &Path,
    agent: &Path,
    mut run: impl FnMut(&HostTool) -> Result<(String, String), super::HostToolError>,
) -> Result<InjectReport, ImageError> {
    let fail = |message: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| ImageError::InjectAgent {
        rootfs: rootfs.to_path_buf(),
        message,
        source,
    };
    let image = std::fs::metadata(rootfs).map_err(|e| fail("cannot read the image".into(), Some(Box::new(e))))?;
    if !image.is_file() {
        return Err(fail("not a regular file (an ext4 image is)".into(), None));
    }
    if agent.to_str().is_none_or(|p| p.contains(['"', '\n', '\r'])) {
        return Err(fail(format!("the agent path {} cannot be passed to debugfs", agent.display()), None));
    }
    let bytes =
        std::fs::read(agent).map_err(|e| fail(format!("cannot read {}", agent.display()), Some(Box::new(e))))?;
    match elf_interpreter(&bytes) {
        Ok(None) => {}
        Ok(Some(interp)) => {
            return Err(fail(
                format!(
                    "{} is dynamically linked ({interp}); build it static with scripts/build-guest.sh",
                    agent.display()
                ),
                None,
            ))
        }
        Err(e) => return Err(fail(format!("{} is no 64-bit ELF executable", agent.display()), Some(Box::new(e)))),
    }
    for (tool, tolerate) in inject_plan(rootfs, agent) {
        let (_, stderr) = run(&tool).map_err(|e| fail(e.to_string(), Some(Box::new(e))))?;
        if let Some(complaint) = complaint(&stderr).filter(|_| tolerate == Tolerate::Nothing) {
            return Err(fail(complaint, None));
        }
    }
    verify(rootfs, bytes.len() as u64, &mut run)?;
    Ok(InjectReport { rootfs: rootfs.to_path_buf(), path: GUEST_AGENT_PATH.into(), size: bytes.len() as u64 })
}

/// debugfs exits 0 even when a request fails; its complaints are the stderr lines after its
/// version banner.
fn complaint(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty()).collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// Reads the installed file's inode back: a regular file, mode 0755, root's, of `size` bytes.
fn verify(
    rootfs: &Path,
    size: u64,
    run: &mut impl FnMut(&HostTool) -> Result<(String, String), super::HostToolError>,
) -> Result<(), ImageError> {
    let fail = |message: String, source: Option<super::HostToolError>| ImageError::InjectAgent {
        rootfs: rootfs.to_path_buf(),
        message,
        source: source.map(|e| Box::new(e) as _),
    };
    let stat =
        HostTool::Debugfs { image: rootfs.to_path_buf(), request: format!("stat {GUEST_AGENT_PATH}"), write: false };
    let (stdout, stderr) = run(&stat).map_err(|e| fail("cannot read the agent's inode back".into(), Some(e)))?;
    let inode = parse_stat(&stdout).ok_or_else(|| fail(format!("the agent is not in the image: {stderr}"), None))?;
    let expected = StatFields { regular: true, mode: 0o755, uid: 0, gid: 0, size };
    if inode != expected {
        return Err(fail(format!("the installed agent is {inode:?}, expected {expected:?}"), None));
    }
    Ok(())
}

/// The fields of `debugfs stat` output that the installation sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    /// `Type: regular`.
    pub regular: bool,
    /// `Mode:  0755`.
    pub mode: u32,
    /// `User:`.
    pub uid: u32,
    /// `Group:`.
    pub gid: u32,
    /// `Size:`.
    pub size: u64,
}

/// Parses `debugfs stat` output (pure).
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let field = |name: &str| {
        let at = text.find(name)? + name.len();
        text[at..].split_whitespace().next().map(str::to_owned)
    };
    Some(StatFields {
        regular: field("Type:")? == "regular",
        mode: u32::from_str_radix(&field("Mode:")?, 8).ok()?,
        uid: field("User:")?.parse().ok()?,
        gid: field("Group:")?.parse().ok()?,
        size: field("Size:")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_writes_then_fixes_owner_and_mode() {
        let plan = inject_plan(Path::new("/img/root.ext4"), Path::new("/opt/my agent/smartvm-guest"));
        let requests: Vec<_> = plan
            .iter()
            .map(|(tool, tolerate)| match tool {
                HostTool::Debugfs { request, write: true, .. } => (request.as_str(), *tolerate),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(requests[2], ("write \"/opt/my agent/smartvm-guest\" /sbin/smartvm-guest", Tolerate::Nothing));
        assert_eq!(requests[0].1, Tolerate::Errors);
        assert_eq!(requests[3].0, "sif /sbin/smartvm-guest mode 0100755");
    }

    #[test]
    fn debugfs_stat_output_parses() {
        let text = "Inode: 12   Type: regular    Mode:  0755   Flags: 0x80000\nGeneration: 0    Version: 0x00000000:00000000\nUser:     0   Group:     0   Project:     0   Size: 2123600\n";
        assert_eq!(parse_stat(text), Some(StatFields { regular: true, mode: 0o755, uid: 0, gid: 0, size: 2_123_600 }));
        assert_eq!(complaint("debugfs 1.47.0 (5-Feb-2023)\n"), None);
        assert!(complaint("debugfs 1.47.0 (5-Feb-2023)\nwrite: Ext2 file already exists\n").is_some());
    }

    #[test]
    fn a_dynamic_executable_names_its_interpreter() {
        let this = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = elf_interpreter(&this).unwrap();
        assert!(interp.is_some_and(|i| i.contains("ld-linux")), "test binaries are dynamic");
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
    }
}
