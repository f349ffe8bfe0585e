//! `smartvm exec` and `smartvm shell`: a command in the guest with its streams here; the
//! command's exit status is the CLI's.

use std::io::IsTerminal;

use smartvm::guest::protocol::{ExecRequest, ExitStatus};
use smartvm::guest::{ExecEvent, Execution, GuestClient};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};

use super::terminal::{self, Input, RawMode};
use super::{usage, GuestTarget};
use crate::exit::{CliError, Exit};

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    target: GuestTarget,
    /// Pass stdin to the command (it reads end-of-file when stdin ends).
    #[arg(short, long)]
    interactive: bool,
    /// Run the command on a terminal whose size follows this one's (stdout and stderr merge).
    #[arg(short, long)]
    tty: bool,
    /// An environment variable for the command (repeatable).
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The working directory in the guest.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Run as this user: UID or UID:GID.
    #[arg(short, long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Collect the output and print `{"status", "exitCode", "stdout", "stderr"}` as JSON.
    #[arg(long, conflicts_with_all = ["interactive", "tty"])]
    json: bool,
    /// The VM's id (none with --guest-socket).
    id: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    #[command(flatten)]
    target: GuestTarget,
    /// The VM's id (none with --guest-socket).
    id: Option<String>,
    /// The shell to run (default `/bin/sh`), after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `smartvm exec [-i] [-t] ID -- CMD…`.
pub async fn exec(args: ExecArgs) -> Result<Exit, CliError> {
    let client = args.target.client(args.id.as_deref())?;
    let (uid, gid) = parse_user(args.user.as_deref())?;
    let request = ExecRequest {
        argv: args.command,
        env: args.env,
        cwd: args.workdir,
        uid,
        gid,
        tty: args.tty.then(terminal::size),
        stdin: args.interactive,
    };
    if args.json {
        return print_json(&client, request).await;
    }
    session(&client, request, false).await
}

/// `smartvm shell ID`: a login-like shell on a terminal; Ctrl-] ends it.
pub async fn shell(args: ShellArgs) -> Result<Exit, CliError> {
    let client = args.target.client(args.id.as_deref())?;
    let argv = if args.command.is_empty() { vec!["/bin/sh".to_owned()] } else { args.command };
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
    let request =
        ExecRequest { argv, env: vec![format!("TERM={term}")], tty: Some(terminal::size()), ..Default::default() };
    if std::io::stdin().is_terminal() {
        eprintln!("connected to {} (Ctrl-] ends the shell)", client.describe());
    }
    session(&client, request, true).await
}

fn parse_user(user: Option<&str>) -> Result<(Option<u32>, Option<u32>), CliError> {
    let Some(user) = user else { return Ok((None, None)) };
    let bad = || usage(format!("--user {user:?}: expected UID or UID:GID (numbers)"));
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((Some(uid), gid))
}

/// Relays one command: stdin (when asked) to it, its output here, resizes while on a terminal.
async fn session(client: &GuestClient, request: ExecRequest, detachable: bool) -> Result<Exit, CliError> {
    let on_terminal = request.tty.is_some();
    let mut run = client.exec(request).await?;
    let _raw = on_terminal.then(RawMode::enter).flatten();
    let mut detached = tokio::spawn(pass_stdin(run.take_stdin(), detachable));
    let mut resized = signal(SignalKind::window_change()).map_err(|e| CliError::new(Exit::Failure, e))?;
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let mut input_open = true;
    let status = loop {
        tokio::select! {
            event = run.next() => match event {
                Some(Ok(ExecEvent::Stdout(bytes))) => write(&mut stdout, &bytes).await?,
                Some(Ok(ExecEvent::Stderr(bytes))) => write(&mut stderr, &bytes).await?,
                Some(Ok(ExecEvent::Exited(status))) => break status,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(CliError::new(Exit::Failure, "the guest connection ended without an exit status")),
            },
            _ = resized.recv(), if on_terminal => {
                let _ = run.resize(terminal::size());
            }
            ended = &mut detached, if input_open => {
                input_open = false;
                if ended.unwrap_or(false) {
                    return Ok(end_detached(run));
                }
            }
        }
    };
    Ok(exit_of(status))
}

/// Passes stdin on; `true` when the detach key ended it.
async fn pass_stdin(stdin: Option<smartvm::guest::ExecStdin>, detachable: bool) -> bool {
    let Some(mut stdin) = stdin else { return false };
    let mut input = terminal::read_stdin(detachable);
    while let Some(input) = input.recv().await {
        match input {
            Input::Data(chunk) => {
                if stdin.write(&chunk).await.is_err() {
                    return false;
                }
            }
            Input::Detach => return true,
        }
    }
    false
}

fn end_detached(run: Execution) -> Exit {
    drop(run);
    eprintln!("\r\nsession ended (Ctrl-])");
    Exit::Success
}

async fn write(out: &mut (impl AsyncWriteExt + Unpin), bytes: &[u8]) -> Result<(), CliError> {
    match out.write_all(bytes).await.and(out.flush().await) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::new(Exit::BrokenPipe, e)),
        Err(e) => Err(CliError::new(Exit::Failure, e)),
    }
}

fn exit_of(status: ExitStatus) -> Exit {
    match status.shell_code() {
        0 => Exit::Success,
        code => Exit::Command(code.clamp(1, 255) as u8),
    }
}

async fn print_json(client: &GuestClient, request: ExecRequest) -> Result<Exit, CliError> {
    let output = client.exec(request).await?.wait_with_output().await?;
    let json = serde_json::json!({
        "status": output.status,
        "exitCode": output.status.shell_code(),
        "stdout": String::from_utf8_lossy(&output.stdout),
        "stderr": String::from_utf8_lossy(&output.stderr),
    });
    println!("{json}");
    Ok(exit_of(output.status))
}
