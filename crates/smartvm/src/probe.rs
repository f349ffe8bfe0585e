//! The embedded probe guest and its report protocol.
//!
//! The probe is a tiny bare-metal x86_64 kernel built from `probe/` with this crate. It boots in
//! milliseconds (even where hardware virtualization is missing and Linux cannot boot) and
//! reports over the serial console what the VM looks like from inside.
//!
//! # Protocol
//! Every line starts with `smartvm-probe `, then a kind and `key=value` pairs. A value is bare
//! when it has no space, `"`, `\` or `=`; otherwise it is double-quoted with `\"`, `\\` and
//! `\xHH` escapes. In order:
//! 1. `boot cmdline="<full kernel command line>"`
//! 2. one `device addr=0x… irq=N type=block|net|vsock|balloon|entropy|other version=2 …` per
//!    `virtio_mmio.device=` entry, with `capacity=<sectors> ro=0|1` (block), `mac=` (net),
//!    `cid=` (vsock);
//! 3. action results, in command-line order:
//!    `read drive=<n> sector=<s> status=ok data=<text up to the first NUL, ≤64 bytes>`,
//!    `write drive=<n> sector=<s> status=ok|ioerr|…`, endless `count n=<i>` lines, or `echo ready`
//!    and one `echo line=<text>` per line typed on the serial console;
//! 4. `done`; then the guest resets (Firecracker exits 0) unless `probe.halt` parks it.
//!
//! A counting, watching or parked probe polls the keyboard controller every millisecond and
//! answers Firecracker's `SendCtrlAltDel` with `ctrl-alt-del` and a reset, like an OS shutting
//! down.
//!
//! Actions (kernel command line): `probe.read=<drive>:<sector>`,
//! `probe.write=<drive>:<sector>:<text>` (`<drive>` = index among block devices, which is the
//! config's drive order), `probe.touch=<MiB>` (write every page of memory above the probe up
//! to that size, then `touch pages=<n>`), `probe.count=<ms>`, `probe.watch=<drive>:<sector>:<ms>` (re-read
//! forever, one `read` line per change), `probe.echo` (echo serial input lines), `probe.halt` (park in a spin loop: hypervisors such as
//! `kvm_pvm` deliver no trap from guest ring 3 back to ring 0, so the probe cannot `hlt`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The probe kernel image (ELF, x86_64). Empty on other architectures.
pub static PROBE_IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/smartvm-probe.elf"));

/// Prefix of every protocol line.
pub const LINE_PREFIX: &str = "smartvm-probe ";

/// FNV-1a of the probe image: a stable content tag for file names, not a security check.
fn probe_tag() -> u64 {
    PROBE_IMAGE.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Where [`install_probe_kernel`] puts the probe kernel in `dir` (pure: nothing is written).
pub fn probe_kernel_path(dir: &Path) -> PathBuf {
    dir.join(format!("smartvm-probe-{:016x}.elf", probe_tag()))
}

/// Writes the probe kernel into `dir` (content-addressed name; kept if already there) and
/// returns its path.
pub fn install_probe_kernel(dir: &Path) -> crate::error::Result<PathBuf> {
    install(dir)
        .map_err(|e| crate::error::SmartVmError::io(format!("cannot install the probe kernel in {}", dir.display()), e))
}

fn install(dir: &Path) -> std::io::Result<PathBuf> {
    if PROBE_IMAGE.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "the probe guest exists for x86_64 only"));
    }
    let tag = probe_tag();
    let path = probe_kernel_path(dir);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == PROBE_IMAGE.len() as u64) {
        return Ok(path);
    }
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(dir)?;
    let tmp = dir.join(format!(".smartvm-probe-{}-{}.tmp", std::process::id(), tag));
    let mut f = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().write(true).create(true).truncate(true),
        0o600,
    )
    .open(&tmp)?;
    std::io::Write::write_all(&mut f, PROBE_IMAGE)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Builds the probe's part of a kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeArgs {
    actions: Vec<String>,
}

impl ProbeArgs {
    /// No actions: report and reset.
    pub fn new() -> Self {
        Self::default()
    }
    /// Read one sector of block device `drive` (index among block devices).
    pub fn read(mut self, drive: usize, sector: u64) -> Self {
        self.actions.push(format!("probe.read={drive}:{sector}"));
        self
    }
    /// Write `text` (no spaces) into one sector.
    pub fn write(mut self, drive: usize, sector: u64, text: &str) -> Self {
        self.actions.push(format!("probe.write={drive}:{sector}:{text}"));
        self
    }
    /// Echo each line typed on the serial console as `echo line=…`, forever (after `echo ready`).
    pub fn echo(mut self) -> Self {
        self.actions.push("probe.echo".into());
        self
    }

    /// Serve the guest protocol's `hello`, `echo` and `health` on vsock `port` of the first vsock
    /// device, forever (after `vsock port=… cid=… status=listening`); any other request is
    /// answered `unsupported`. See [`GuestClient`](crate::guest::GuestClient).
    pub fn vsock(mut self, port: u32) -> Self {
        self.actions.push(format!("probe.vsock={port}"));
        self
    }

    /// Print `line n=0` … `line n=<count - 1>` at once.
    pub fn lines(mut self, count: u64) -> Self {
        self.actions.push(format!("probe.lines={count}"));
        self
    }

    /// Print `exit code=<code>` (0-255) and end the VM: a workload's exit status.
    pub fn exit(mut self, code: u8) -> Self {
        self.actions.push(format!("probe.exit={code}"));
        self
    }

    /// Write every page of guest memory above the probe's image up to `mib` MiB (the VM's
    /// memory size), then report `touch pages=<n>`.
    pub fn touch(mut self, mib: u64) -> Self {
        self.actions.push(format!("probe.touch={mib}"));
        self
    }

    /// Print `count n=…` every `ms` milliseconds forever.
    pub fn count(mut self, ms: u64) -> Self {
        self.actions.push(format!("probe.count={ms}"));
        self
    }
    /// Re-read a sector every `ms` forever, reporting each change.
    pub fn watch(mut self, drive: usize, sector: u64, ms: u64) -> Self {
        self.actions.push(format!("probe.watch={drive}:{sector}:{ms}"));
        self
    }
    /// Park instead of resetting after `done`.
    pub fn halt(mut self) -> Self {
        self.actions.push("probe.halt".into());
        self
    }
    /// The command-line fragment.
    pub fn to_boot_args(&self) -> String {
        self.actions.join(" ")
    }
}

/// One parsed protocol line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeLine {
    /// `boot`, `device`, `read`, `write`, `count`, `done`, `panic`.
    pub kind: String,
    /// Its key/value pairs.
    pub fields: BTreeMap<String, String>,
}

impl ProbeLine {
    /// Parses a console line; `None` when it is not a probe line or is malformed.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end_matches('\r').strip_prefix(LINE_PREFIX)?;
        let (kind, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut fields = BTreeMap::new();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let (value, tail) = parse_value(after)?;
            fields.insert(key.to_string(), value);
            rest = tail.trim_start_matches(' ');
        }
        Some(Self { kind: kind.to_string(), fields })
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

fn parse_value(s: &str) -> Option<(String, &str)> {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find(' ').unwrap_or(s.len());
        return Some((s[..end].to_string(), &s[end..]));
    };
    let mut out = Vec::new();
    let bytes = quoted.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), &quoted[i + 1..])),
            b'\\' => {
                match bytes.get(i + 1)? {
                    b'x' => {
                        let hex = quoted.get(i + 2..i + 4)?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 4;
                        continue;
                    }
                    &c => out.push(c),
                }
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// A virtio device as the guest saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeDevice {
    /// MMIO base address.
    pub addr: u64,
    /// Interrupt line.
    pub irq: u32,
    /// `block`, `net`, `vsock`, `balloon`, `entropy` or `other`.
    pub kind: String,
    /// Block capacity in 512-byte sectors.
    pub capacity: Option<u64>,
    /// Block device is read-only.
    pub read_only: Option<bool>,
    /// Net MAC.
    pub mac: Option<String>,
    /// vsock guest CID.
    pub cid: Option<u64>,
}

/// Result of a `read` or `write` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeIo {
    /// Block device index.
    pub drive: u64,
    /// Sector.
    pub sector: u64,
    /// `ok`, `ioerr`, …
    pub status: String,
    /// Data read (reads only).
    pub data: Option<String>,
}

/// Everything a probe run reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeReport {
    /// The kernel command line the guest received.
    pub cmdline: Option<String>,
    /// Devices, in discovery order.
    pub devices: Vec<ProbeDevice>,
    /// Read results.
    pub reads: Vec<ProbeIo>,
    /// Write results.
    pub writes: Vec<ProbeIo>,
    /// Counter values seen.
    pub counts: Vec<u64>,
    /// `done` was reported.
    pub done: bool,
    /// The guest panicked.
    pub panicked: bool,
    /// The guest saw Ctrl-Alt-Del and reset.
    pub ctrl_alt_del: bool,
    /// `line n=` values seen (`probe.lines=`).
    pub lines: Vec<u64>,
    /// The exit code the guest reported (`probe.exit=`).
    pub exit_code: Option<u8>,
    /// Pages the guest wrote (`probe.touch=`).
    pub touched_pages: Option<u64>,
}

impl ProbeReport {
    /// Builds a report from console lines (non-probe lines are ignored).
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut r = ProbeReport::default();
        for line in lines.into_iter().filter_map(ProbeLine::parse) {
            let num = |k: &str| line.get(k).and_then(parse_number);
            match line.kind.as_str() {
                "boot" => r.cmdline = line.get("cmdline").map(str::to_string),
                "device" => r.devices.push(ProbeDevice {
                    addr: num("addr").unwrap_or(0),
                    irq: num("irq").unwrap_or(0) as u32,
                    kind: line.get("type").unwrap_or("other").to_string(),
                    capacity: num("capacity"),
                    read_only: num("ro").map(|v| v != 0),
                    mac: line.get("mac").map(str::to_string),
                    cid: num("cid"),
                }),
                "read" | "write" => {
                    let io = ProbeIo {
                        drive: num("drive").unwrap_or(u64::MAX),
                        sector: num("sector").unwrap_or(u64::MAX),
                        status: line.get("status").unwrap_or("").to_string(),
                        data: line.get("data").map(str::to_string),
                    };
                    if line.kind == "read" {
                        r.reads.push(io)
                    } else {
                        r.writes.push(io)
                    }
                }
                "count" => r.counts.extend(num("n")),
                "line" => r.lines.extend(num("n")),
                "exit" => r.exit_code = num("code").and_then(|c| u8::try_from(c).ok()),
                "touch" => r.touched_pages = num("pages"),
                "done" => r.done = true,
                "panic" => r.panicked = true,
                "ctrl-alt-del" => r.ctrl_alt_del = true,
                _ => {}
            }
        }
        r
    }

    /// Devices of one kind.
    pub fn devices_of(&self, kind: &str) -> Vec<&ProbeDevice> {
        self.devices.iter().filter(|d| d.kind == kind).collect()
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report() {
        let lines = [
            "smartvm-probe boot cmdline=\"console=ttyS0 a=\\\"b\\\" probe.read=0:0\"",
            "noise from somewhere",
            "smartvm-probe device addr=0xd0000000 irq=5 type=block version=2 capacity=2048 ro=1",
            "smartvm-probe device addr=0xd0001000 irq=6 type=net version=2 mac=02:00:00:00:00:01",
            "smartvm-probe device addr=0xd0002000 irq=7 type=vsock version=2 cid=3",
            "smartvm-probe read drive=0 sector=0 status=ok data=\"hi there\\x01\"",
            "smartvm-probe write drive=0 sector=1 status=ioerr",
            "smartvm-probe count n=0",
            "smartvm-probe count n=1",
            "smartvm-probe done",
            "smartvm-probe ctrl-alt-del",
        ];
        let r = ProbeReport::parse(lines);
        assert_eq!(r.cmdline.as_deref(), Some("console=ttyS0 a=\"b\" probe.read=0:0"));
        assert_eq!(r.devices.len(), 3);
        assert_eq!(r.devices[0].capacity, Some(2048));
        assert_eq!(r.devices[0].read_only, Some(true));
        assert_eq!(r.devices[0].addr, 0xd000_0000);
        assert_eq!(r.devices_of("net")[0].mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(r.devices_of("vsock")[0].cid, Some(3));
        assert_eq!(r.reads[0].data.as_deref(), Some("hi there\u{1}"));
        assert_eq!(r.writes[0].status, "ioerr");
        assert_eq!(r.counts, [0, 1]);
        assert!(r.done && !r.panicked && r.ctrl_alt_del);
        assert_eq!(ProbeLine::parse("smartvm-probe x key=\"unterminated"), None);
    }

    #[test]
    fn args_and_image() {
        let a = ProbeArgs::new().read(0, 1).write(1, 2, "abc").count(5).halt();
        assert_eq!(a.to_boot_args(), "probe.read=0:1 probe.write=1:2:abc probe.count=5 probe.halt");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(&PROBE_IMAGE[..4], b"\x7fELF");
            let dir = tempfile::tempdir().unwrap();
            let p = install_probe_kernel(dir.path()).unwrap();
            assert_eq!(install_probe_kernel(dir.path()).unwrap(), p);
            assert_eq!(std::fs::read(p).unwrap(), PROBE_IMAGE);
        }
    }
}
