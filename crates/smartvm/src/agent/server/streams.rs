//! The streaming routes: `/v1/events` and `logs?follow`, which end when the agent shuts down,
//! and console input.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::answer::{Answer, Failure, QueryOf, RawBody, VmId};
use super::Shared;
use crate::agent::wire::VmEvent;
use crate::error::SmartVmError;
use crate::lifecycle::VmState;

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
    VmId(id): VmId,
    QueryOf(q): QueryOf<LogsQuery>,
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

/// Most bytes one console request may carry (a pipe's buffer; more is 413).
const MAX_CONSOLE_INPUT: usize = 64 << 10;
/// How long the guest may take to read what one request typed (then 429 `BUSY`).
const CONSOLE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes the body into the VM's console input (the guest's serial receiver), all of it: the
/// write waits while the pipe is full, up to [`CONSOLE_WRITE_TIMEOUT`].
pub(super) async fn console_input(
    State(agent): State<Shared>,
    VmId(id): VmId,
    RawBody(body): RawBody,
) -> Answer<StatusCode> {
    use tokio::io::AsyncWriteExt;
    let vm = agent.live(&id)?;
    let state = vm.state();
    if !matches!(state, VmState::Running | VmState::Paused) {
        return Err(SmartVmError::InvalidState { operation: "type into", state }.into());
    }
    if body.len() > MAX_CONSOLE_INPUT {
        let e = SmartVmError::from(crate::config::ConfigErrors::single(
            "<body>",
            format!("{} bytes; at most {MAX_CONSOLE_INPUT} per request", body.len()),
        ));
        return Err(Failure::Status(StatusCode::PAYLOAD_TOO_LARGE, e));
    }
    let fifo = crate::process::console_input(vm.runtime_dir());
    let failed = |e: std::io::Error| SmartVmError::io(format!("cannot write to the console of {id}"), e);
    let mut pipe = tokio::net::unix::pipe::OpenOptions::new().open_sender(&fifo).map_err(failed)?;
    match tokio::time::timeout(CONSOLE_WRITE_TIMEOUT, pipe.write_all(&body)).await {
        Ok(written) => written.map_err(failed)?,
        Err(_) => return Err(SmartVmError::Busy(format!("the console of {id} does not take input")).into()),
    }
    Ok(StatusCode::NO_CONTENT)
}
