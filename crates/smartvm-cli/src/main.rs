//! The `smartvm` command. All logic lives in the `smartvm` library and the command modules.

mod bench;
mod cli;
mod config_file;
mod doctor;
mod exit;
mod guest;
mod images;
mod maintenance;
mod pools;
mod progress;
mod run;
mod run_flags;
mod serve;
mod snapshot;
mod vms;

fn main() -> std::process::ExitCode {
    cli::main()
}
