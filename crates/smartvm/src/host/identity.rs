//! Recognising a journaled Firecracker process without trusting its pid alone: start time,
//! executable and command line must all match what was recorded at spawn.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::unwind_error::UnwindError;

/// How long an unwind waits for a killed process to exit.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// The Firecracker (or jailer) process of a VM, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRecord {
    /// Its pid (absent between journaling and spawn).
    #[serde(default)]
    pub pid: Option<i32>,
    /// Its start time (clock ticks since boot), so a recycled pid is never mistaken for it.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// Executables it may be running: Firecracker, or for a jailed VM the jailer and the
    /// Firecracker copy inside the jail.
    #[serde(default)]
    pub exe: Vec<PathBuf>,
    /// Arguments its command line must contain (API socket, instance id).
    #[serde(default)]
    pub markers: Vec<String>,
    /// For a jailed VM: the chroot (`/proc/<pid>/root` once the jailer has entered it) and
    /// the executable as seen inside it (`/firecracker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<JailedImage>,
}

/// How a jailed Firecracker shows in `/proc`: its root is the chroot (in its own mount
/// namespace, so recognised by device and inode, not by path), its executable a path inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JailedImage {
    /// The chroot on the host.
    pub root: PathBuf,
    /// Device and inode of the chroot, recorded before spawn.
    pub root_id: (u64, u64),
    /// The executable inside it.
    pub exe: PathBuf,
}

impl JailedImage {
    /// The image of a Firecracker `exe` jailed in `root` (which must exist).
    pub fn new(root: &Path, exe: PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(root)?;
        Ok(Self { root: root.to_path_buf(), root_id: (m.dev(), m.ino()), exe })
    }
}

/// Device and inode of the root directory of `pid`.
fn root_id_of(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/root")).ok().map(|m| (m.dev(), m.ino()))
}

/// Start time (field 22 of `/proc/<pid>/stat`) of a live, non-zombie process.
pub fn process_start_time(pid: i32) -> Option<u64> {
    match stat_of(pid)? {
        (b'Z', _) => None,
        (_, start) => Some(start),
    }
}

/// When a live process started, as wall-clock time: the boot time (`btime` of `/proc/stat`)
/// plus its start time in clock ticks. Whole seconds of boot time: good for an uptime.
pub fn process_started_at(pid: i32) -> Option<std::time::SystemTime> {
    let ticks = process_start_time(pid)?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??.max(1) as u64;
    let since_boot = std::time::Duration::from_millis(ticks.saturating_mul(1000) / hz);
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(btime) + since_boot)
}

/// This process's start time, read once: `/proc/self/stat` of a many-threaded program is
/// costly to read (the kernel sums over every thread), and every VM records its owner.
pub fn this_process_start_time() -> Option<u64> {
    static START: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| process_start_time(std::process::id() as i32))
}

/// State letter and start time of `pid`, zombies included.
fn stat_of(pid: i32) -> Option<(u8, u64)> {
    stat_fields(pid).map(|(state, _, start)| (state, start))
}

/// `PF_EXITING` in the kernel's per-task flags: the process is tearing itself down.
const PF_EXITING: u64 = 0x4;

/// State letter, task flags and start time (fields 3, 9 and 22 of `/proc/<pid>/stat`).
fn stat_fields(pid: i32) -> Option<(u8, u64, u64)> {
    // One read into a buffer: procfs reports no size, so `read_to_string` would probe with a
    // series of small reads (each formatting the whole line again).
    let mut buf = [0u8; 1024];
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = std::io::Read::read(&mut file, &mut buf).ok()?;
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((*fields.first()?.as_bytes().first()?, fields.get(6)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// True while `pid` is exiting (its memory, and with it its command line, may already be gone).
fn is_exiting(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|(_, flags, _)| flags & PF_EXITING != 0)
}

fn exe_of(pid: i32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = link.to_string_lossy();
    Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)))
}

fn cmdline_of(pid: i32) -> Vec<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| b.split(|&c| c == 0).filter(|a| !a.is_empty()).map(<[u8]>::to_vec).collect())
        .unwrap_or_default()
}

impl ProcessRecord {
    /// A record for a process about to run one of `exe` with `markers` on its command line
    /// (each resolved to the path `/proc/<pid>/exe` will show).
    pub fn new(exe: Vec<PathBuf>, markers: Vec<String>) -> Self {
        let exe = exe.into_iter().map(|p| std::fs::canonicalize(&p).unwrap_or(p)).collect();
        Self { pid: None, start_time: None, exe, markers, jail: None }
    }

    /// True when `pid` runs one of the recorded executables (on the host, or the jailed one
    /// inside its chroot) with every marker on its command line.
    fn looks_like(&self, pid: i32) -> bool {
        let (Some(exe), Some(root)) = (exe_of(pid), root_id_of(pid)) else { return false };
        let host_root = root_id_of(std::process::id() as i32);
        let on_host = Some(root) == host_root && self.exe.contains(&exe);
        let in_jail = self.jail.as_ref().is_some_and(|j| j.root_id == root && j.exe == exe);
        let exe_ok = on_host || in_jail;
        let args = cmdline_of(pid);
        exe_ok && self.markers.iter().all(|m| args.iter().any(|a| a == m.as_bytes()))
    }

    /// True when the recorded process still runs and is the one recorded.
    /// A process in transition (its command line not laid out yet, or already torn down)
    /// counts as running: never reclaim what might still be starting.
    pub fn is_running(&self) -> bool {
        let Some(pid) = self.pid else { return false };
        let same_start = self.start_time.is_some() && process_start_time(pid) == self.start_time;
        same_start && (self.looks_like(pid) || cmdline_of(pid).is_empty())
    }

    /// Stricter than [`is_running`](Self::is_running): the recorded process runs, is not
    /// exiting or a zombie, and is the one recorded (pid, start time, executable, markers) —
    /// what a pool may hand out.
    pub fn is_live(&self) -> bool {
        let Some(pid) = self.pid else { return false };
        let Some((state, flags, start)) = stat_fields(pid) else { return false };
        let ending = matches!(state, b'Z' | b'X' | b'x') || flags & PF_EXITING != 0;
        self.start_time == Some(start) && !ending && self.looks_like(pid)
    }

    /// Kills the process and waits for it. The owner (which spawned it) checks pid and start
    /// time; anyone else also checks executable and command line, and acts on nothing else.
    /// A record without pid (a crash right around spawn) is matched by executable and markers.
    pub(crate) fn kill(&self, owner: bool) -> Result<(), UnwindError> {
        let pids: Vec<i32> = match self.pid {
            Some(pid) => {
                let Some((state, started)) = stat_of(pid) else { return Ok(()) }; // gone
                if self.start_time.is_some() && Some(started) != self.start_time {
                    return Ok(()); // the pid was recycled: ours is gone
                }
                if state == b'Z' {
                    if self.start_time.is_none() {
                        return Ok(()); // cannot tell whose zombie this is: leave it
                    }
                    // Our process, its main thread already exited: wait (bounded) until its other
                    // threads have too, so that what they hold (a TAP) is released.
                    return if crate::process::kill_and_wait(pid, KILL_WAIT) {
                        Ok(())
                    } else {
                        Err(UnwindError::Unkillable(pid))
                    };
                }
                let verified = self.start_time.is_some() && self.looks_like(pid);
                // Same pid and start time, already exiting (its command line may be gone while it
                // still holds its files): waiting for it is harmless even were it not ours.
                let exiting = self.start_time.is_some() && is_exiting(pid);
                if !owner && !verified && !exiting {
                    return Err(UnwindError::NotOurs("the process does not match the journal"));
                }
                vec![pid]
            }
            None if self.markers.is_empty() || self.exe.is_empty() => vec![],
            None => self.matching_processes(),
        };
        for pid in pids {
            if !crate::process::kill_and_wait(pid, KILL_WAIT) {
                return Err(UnwindError::Unkillable(pid));
            }
        }
        Ok(())
    }

    fn matching_processes(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|&pid| self.looks_like(pid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_started_at_is_now_for_a_new_child() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let started = process_started_at(child.id() as i32).unwrap();
        let off = std::time::SystemTime::now().duration_since(started).unwrap_or_default();
        child.kill().unwrap();
        child.wait().unwrap();
        // btime is whole seconds and ticks are 10 ms: within a few seconds of now.
        assert!(off < std::time::Duration::from_secs(3), "{off:?}");
        assert!(process_started_at(i32::MAX).is_none());
    }

    #[test]
    fn this_process_start_time_is_read_once_and_right() {
        let own = process_start_time(std::process::id() as i32);
        assert!(own.is_some());
        assert_eq!(this_process_start_time(), own);
        assert_eq!(this_process_start_time(), own);
    }

    #[test]
    fn a_foreign_process_with_the_right_start_time_is_not_killed() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        // The parent may resume before exec has laid out the new command line: wait for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cmdline_of(pid).is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let record = ProcessRecord {
            pid: Some(pid),
            start_time: process_start_time(pid),
            exe: vec!["/usr/bin/firecracker".into()],
            markers: vec!["--api-sock".into()],
            jail: None,
        };
        assert!(!record.is_running(), "sleep is not the journaled Firecracker");
        assert!(matches!(record.kill(false), Err(UnwindError::NotOurs(_))));
        assert!(process_start_time(pid).is_some(), "still alive");
        let sleep = ProcessRecord::new(vec![exe_of(pid).unwrap()], vec!["30".into()]);
        let genuine = ProcessRecord { pid: Some(pid), start_time: process_start_time(pid), ..sleep };
        assert!(genuine.is_running(), "{genuine:?} exe={:?} cmd={:?}", exe_of(pid), cmdline_of(pid));
        genuine.kill(false).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        genuine.kill(false).unwrap();
    }
}
