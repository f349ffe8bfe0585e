//! `smartvm cp SRC DST`: one side is `ID:/guest/path` (or `:/guest/path` with
//! `--guest-socket`), the other a local path; files and directories, modes and ownership kept.
//! As `docker cp`: into an existing directory the source keeps its name, else it takes the
//! destination's.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use smartvm::guest::protocol::{FileKind, GuestErrorCode};
use smartvm::guest::{CopyReport, GuestClient};
use smartvm::SmartVmError;

use super::{usage, GuestTarget};
use crate::exit::{CliError, Exit};

#[derive(Debug, clap::Args)]
pub struct CpArgs {
    #[command(flatten)]
    target: GuestTarget,
    /// Print `{"bytes", "entries"}` as JSON.
    #[arg(long)]
    json: bool,
    /// What to copy: a local path, or ID:/guest/path.
    source: String,
    /// Where to: ID:/guest/path, or a local path.
    destination: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Local(PathBuf),
    /// `(VM id — empty with --guest-socket, absolute guest path)`.
    Guest(String, String),
}

/// `ID:/path` or `:/path` is the guest's; anything else (including `./a:b`) is local.
fn side(text: &str) -> Side {
    match text.split_once(':') {
        Some((id, path)) if !id.contains('/') && path.starts_with('/') => Side::Guest(id.to_owned(), path.to_owned()),
        _ => Side::Local(PathBuf::from(text)),
    }
}

pub async fn cp(args: CpArgs) -> Result<Exit, CliError> {
    let report = match (side(&args.source), side(&args.destination)) {
        (Side::Local(from), Side::Guest(id, to)) => copy_in(&args.target.client(some(&id))?, &from, &to).await?,
        (Side::Guest(id, from), Side::Local(to)) => copy_out(&args.target.client(some(&id))?, &from, &to).await?,
        (Side::Guest(..), Side::Guest(..)) => return Err(usage("one side must be local".into())),
        (Side::Local(_), Side::Local(_)) => return Err(usage("one side must be ID:/guest/path (or :/path)".into())),
    };
    if args.json {
        println!("{}", serde_json::json!({ "bytes": report.bytes, "entries": report.entries }));
    } else {
        crate::exit::notice(format_args!("copied {} entries ({} bytes)", report.entries, report.bytes));
    }
    Ok(Exit::Success)
}

fn some(id: &str) -> Option<&str> {
    Some(id).filter(|id| !id.is_empty())
}

async fn copy_in(client: &GuestClient, from: &Path, to: &str) -> Result<CopyReport, CliError> {
    let into_dir = match client.stat(to).await {
        Ok(stat) => stat.kind == FileKind::Dir,
        Err(SmartVmError::Guest(e)) if e.guest_code() == Some(GuestErrorCode::NotFound) => false,
        Err(e) => return Err(e.into()),
    };
    let report = if into_dir {
        client.copy_in(from, to, None).await?
    } else {
        let (dir, name) = split(to)?;
        client.copy_in(from, &dir, Some(OsStr::new(&name))).await?
    };
    Ok(report)
}

async fn copy_out(client: &GuestClient, from: &str, to: &Path) -> Result<CopyReport, CliError> {
    if to.is_dir() {
        return Ok(client.copy_out(from, to, None).await?);
    }
    let name =
        to.file_name().and_then(OsStr::to_str).ok_or_else(|| usage(format!("{} names no file", to.display())))?;
    let dir = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(client.copy_out(from, dir, Some(name)).await?)
}

/// `/a/b/c` → (`/a/b`, `c`).
fn split(path: &str) -> Result<(String, String), CliError> {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() && name != "." && name != ".." => {
            Ok((if dir.is_empty() { "/".into() } else { dir.into() }, name.into()))
        }
        _ => Err(usage(format!("{path} names no file in the guest"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_told_apart_like_docker_cp() {
        assert_eq!(side("vm1:/etc/hosts"), Side::Guest("vm1".into(), "/etc/hosts".into()));
        assert_eq!(side(":/tmp"), Side::Guest(String::new(), "/tmp".into()));
        assert_eq!(side("./a:/b"), Side::Local("./a:/b".into()));
        assert_eq!(side("vm1:relative"), Side::Local("vm1:relative".into()));
        assert_eq!(side("plain.txt"), Side::Local("plain.txt".into()));
        assert_eq!(split("/a/b/").unwrap(), ("/a".into(), "b".into()));
        assert_eq!(split("/top").unwrap(), ("/".into(), "top".into()));
        assert!(split("/").is_err());
    }
}
