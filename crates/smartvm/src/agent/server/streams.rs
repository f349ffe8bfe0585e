//! The streaming routes: `/v1/events` and `logs?follow`, which end when the agent shuts down,
//! and console input.

use std::os::unix::fs::OpenOptionsExt;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::answer::Answer;
use super::Shared;
use crate::agent::wire::VmEvent;
use crate::{SmartVmError, VmState};

fn ndjson_line(event: &VmEvent) -> Result<String, std::convert::Infallible> {
    Ok(serde_json::to_string(event).unwrap_or_default() + "\n")
}

/// Each VM's current state, then every change, one JSON object per line, until the agent
/// shuts down.
pub(super) async fn events(State(agent): State<Shared>) -> Response {
    let live = agent.subscribe();
    let head: Vec<_> = agent.current().iter().map(ndjson_line).collect();
    let changes = futures_util::stream::unfold(live, |mut live| async move {
        loop {
            match live.recv().await {
                Ok(event) => return Some((ndjson_line(&event), live)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    let stream = futures_util::stream::iter(head).chain(changes).take_until(agent.closed());
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// Start with the lines kept so far (default); `false` for new output only (attach).
    history: Option<bool>,
}

/// The console lines kept so far, then (with `follow`) each new one until the console ends.
pub(super) async fn logs(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Answer<Response> {
    let vm = agent.live(&id)?;
    let history = q.history.unwrap_or(true);
    if !q.follow {
        // Only what is kept: the lines buffered now.
        let text: String = vm.console().lines().iter().filter(|_| history).map(|l| format!("{l}\n")).collect();
        return Ok(text.into_response());
    }
    let lines = vm.console().stream(history).map(|line| Ok::<_, std::convert::Infallible>(format!("{line}\n")));
    Ok(Body::from_stream(lines.take_until(agent.closed())).into_response())
}

/// Writes the body into the VM's console input (the guest's serial receiver).
pub(super) async fn console_input(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<StatusCode> {
    let vm = agent.live(&id)?;
    let state = vm.state();
    if !matches!(state, VmState::Running | VmState::Paused) {
        return Err(SmartVmError::InvalidState { operation: "type into", state }.into());
    }
    let fifo = crate::process::console_input(vm.runtime_dir());
    let write = move || -> std::io::Result<()> {
        use std::io::Write;
        // O_NONBLOCK: a console nobody reads must not hang the agent.
        let flags = nix::fcntl::OFlag::O_NONBLOCK.bits();
        let mut f = std::fs::OpenOptions::new().write(true).custom_flags(flags).open(&fifo)?;
        f.write_all(&body)
    };
    let failed = |e: std::io::Error| SmartVmError::io(format!("cannot write to the console of {id}"), e);
    tokio::task::spawn_blocking(write).await.map_err(|e| failed(std::io::Error::other(e)))?.map_err(failed)?;
    Ok(StatusCode::NO_CONTENT)
}
