//! The guest agent of a VM the host agent holds, reached through the host agent: `GET
//! /v1/vms/{id}/guest` with `Upgrade: smartvm-guest` turns the HTTP connection into a raw
//! connection to the guest agent (the host agent does the vsock handshake), so the client then
//! speaks the guest protocol itself, with its streams and back-pressure intact.

use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::TokioIo;

use super::route::Route;
use super::AgentClient;
use crate::api::ApiError;
use crate::error::{Result, SmartVmError};
use crate::guest::{Connecting, GuestClient, GuestConnection, GuestConnector};

/// The protocol named in the `Upgrade` header.
pub const GUEST_UPGRADE: &str = "smartvm-guest";

/// Opens guest connections of one VM through the host agent.
#[derive(Debug, Clone)]
struct ThroughAgent {
    socket: PathBuf,
    id: String,
    port: Option<u32>,
}

impl AgentClient {
    /// A client of the guest agent inside VM `id` (on `port`, default smartvm-guest's), through
    /// this host agent.
    pub fn guest(&self, id: &str, port: Option<u32>) -> GuestClient {
        let connector = ThroughAgent { socket: self.socket().to_path_buf(), id: id.to_owned(), port };
        GuestClient::with_connector(Arc::new(connector))
    }
}

impl GuestConnector for ThroughAgent {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(self.upgrade())
    }

    fn describe(&self) -> String {
        format!("VM {} through the agent at {}", self.id, self.socket.display())
    }
}

impl ThroughAgent {
    async fn upgrade(&self) -> Result<GuestConnection> {
        let mut path = Route::GuestConnect.path(&self.id);
        if let Some(port) = self.port {
            path.push_str(&format!("?port={port}"));
        }
        let response = super::client::get(&self.socket, &path, Some(GUEST_UPGRADE)).await?;
        let upgraded = hyper::upgrade::on(response).await.map_err(|e| SmartVmError::SocketRequestFailed {
            method: "GET".into(),
            path: path.clone(),
            source: ApiError::Http(e),
        })?;
        Ok(Box::new(TokioIo::new(upgraded)))
    }
}
