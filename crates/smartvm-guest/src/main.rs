//! `smartvm-guest`: the agent inside a smartvm guest. It serves the protocol of
//! `smartvm-guest-protocol` (exec, copy in/out, port forwarding, health, shutdown) on AF_VSOCK and,
//! for tests and non-VM use, on Unix sockets. As PID 1 it is also the guest's init: it mounts the
//! API filesystems, reaps orphans, runs the workload given after `--`, and powers the guest off
//! when that ends.

mod agent;
mod copy;
mod exec;
mod forward;
mod init;
mod listen;
mod net;
mod op;
mod options;
mod pty;
mod reaper;
mod session;
mod stat;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let options = options::Options::parse();
    let pid1 = std::process::id() == 1;
    if pid1 {
        // Before anything else: without /proc and /dev the rest cannot work, and a failure is
        // reported on the console, which the host reads.
        init::mount_api_filesystems();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("smartvm-guest: cannot start: {e}");
            return init::finish(pid1, 1);
        }
    };
    let status = runtime.block_on(session::serve(options, pid1));
    init::finish(pid1, status)
}
