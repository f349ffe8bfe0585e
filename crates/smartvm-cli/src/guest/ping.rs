//! `smartvm ping ID`: who answers inside a guest, and how fast.

use std::time::Instant;

use super::GuestTarget;
use crate::exit::{CliError, Exit};

#[derive(Debug, clap::Args)]
pub struct PingArgs {
    #[command(flatten)]
    target: GuestTarget,
    /// Print `{"name", "version", "protocol", "capabilities", "roundTripMs"}`.
    #[arg(long)]
    json: bool,
    /// The VM's id (none with --guest-socket).
    id: Option<String>,
}

/// Says hello to the guest agent, then times one echo round trip.
pub async fn ping(args: PingArgs) -> Result<Exit, CliError> {
    let client = args.target.client(args.id.as_deref())?;
    let welcome = client.hello().await?;
    let started = Instant::now();
    client.echo("ping").await?;
    let round_trip = started.elapsed().as_secs_f64() * 1000.0;
    let capabilities: Vec<String> = welcome
        .capabilities
        .iter()
        .map(|c| serde_json::to_value(c).map(|v| v.as_str().unwrap_or("?").to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::new(Exit::Failure, e))?;
    if args.json {
        let json = serde_json::json!({
            "name": welcome.name,
            "version": welcome.version,
            "protocol": welcome.protocol,
            "capabilities": capabilities,
            "roundTripMs": round_trip,
        });
        println!("{json}");
    } else {
        println!("{} {} (protocol {}): {}", welcome.name, welcome.version, welcome.protocol, capabilities.join(" "));
        println!("round trip {round_trip:.2} ms");
    }
    Ok(Exit::Success)
}
