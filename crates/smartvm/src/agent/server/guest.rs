//! `GET /v1/vms/{id}/guest` (`Upgrade: smartvm-guest`): relays the upgraded connection to the
//! VM's guest agent. The guest is connected before the upgrade is accepted, so a VM without a
//! vsock device or agent gets a coded error answer (503 `GUEST_UNAVAILABLE`), not a dead pipe.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::answer::{Answer, Failure, QueryOf, VmId};
use super::Shared;
use crate::agent::guest::GUEST_UPGRADE;
use crate::config::ConfigErrors;
use crate::error::SmartVmError;
use crate::lifecycle::VmState;

#[derive(serde::Deserialize)]
pub(super) struct GuestQuery {
    /// The guest's vsock port (default: smartvm-guest's).
    port: Option<u32>,
}

pub(super) async fn connect(
    State(agent): State<Shared>,
    VmId(id): VmId,
    QueryOf(query): QueryOf<GuestQuery>,
    request: Request,
) -> Answer<Response> {
    let asked = request.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if !asked.is_some_and(|v| v.eq_ignore_ascii_case(GUEST_UPGRADE)) {
        let e =
            SmartVmError::from(ConfigErrors::single("Upgrade", format!("this route needs `Upgrade: {GUEST_UPGRADE}`")));
        return Err(Failure::Status(StatusCode::UPGRADE_REQUIRED, e));
    }
    let vm = agent.live(&id)?;
    let state = vm.state();
    if state != VmState::Running {
        return Err(SmartVmError::InvalidState { operation: "reach the guest agent of", state }.into());
    }
    let port = query.port.unwrap_or(crate::guest::protocol::DEFAULT_VSOCK_PORT);
    let mut guest = vm.guest_on(port)?.open().await?;
    let upgrading = hyper::upgrade::on(request);
    let closed = agent.closed();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrading.await else { return };
        let mut client = TokioIo::new(upgraded);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut guest) => {}
            _ = closed => {}
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(GUEST_UPGRADE));
    Ok(response)
}
