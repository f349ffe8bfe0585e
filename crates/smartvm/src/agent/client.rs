//! The typed client of the host agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::route::Route;
use super::wire::{
    AgentInfo, CheckoutRequest, ErrorBody, PoolRequest, RestoreRequest, SnapshotRequest, SnapshotSummary, StopSummary,
    VmSummary,
};
use crate::api::{ApiClient, ApiError};
use crate::config::VmConfig;
use crate::error::Result;
use crate::error::SmartVmError;
use crate::options::SmartVmOptions;
use crate::pool::PoolStats;

/// Talks to a host agent (`smartvm serve`) over its Unix socket.
#[derive(Debug)]
pub struct AgentClient {
    socket: PathBuf,
    api: ApiClient,
}

impl AgentClient {
    /// A client of the agent listening at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        // Starting and stopping VMs takes longer than one Firecracker request.
        let api = ApiClient::new(&socket).with_timeout(Duration::from_secs(120));
        Self { socket, api }
    }

    /// Where an agent run with `options` listens: `<runtime_dir>/smartvm.sock`.
    pub fn default_socket(options: &SmartVmOptions) -> PathBuf {
        options.runtime_dir.join("smartvm.sock")
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unavailable(&self, e: SmartVmError) -> SmartVmError {
        match e {
            SmartVmError::SocketRequestFailed { source: ApiError::Connect { source, .. }, .. } => {
                SmartVmError::AgentUnavailable { socket: self.socket.clone(), source }
            }
            other => other,
        }
    }

    /// `route` (for VM `id`, with `query` appended), decoded.
    async fn call<T: DeserializeOwned>(&self, route: Route, id: &str, query: &str, body: Option<Vec<u8>>) -> Result<T> {
        let (method, path) = (route.method(), route.path(id) + query);
        let path = path.as_str();
        let response = self.api.request(method.clone(), path, body).await.map_err(|e| self.unavailable(e))?;
        let text = if response.body.trim().is_empty() { "null" } else { response.body.as_str() };
        if !response.ok {
            return Err(match serde_json::from_str::<ErrorBody>(text) {
                Ok(body) => body.into_error(response.status_code),
                Err(_) => SmartVmError::Api {
                    method: method.to_string(),
                    path: path.into(),
                    status: response.status_code,
                    fault_message: Some(response.body),
                },
            });
        }
        serde_json::from_str(text).map_err(|e| SmartVmError::SocketRequestFailed {
            method: method.to_string(),
            path: path.into(),
            source: ApiError::Decode { body: response.body.clone(), source: e },
        })
    }

    /// About the agent (also a liveness check).
    pub async fn info(&self) -> Result<AgentInfo> {
        self.call(Route::Info, "", "", None).await
    }

    /// Creates and starts a VM from `config` (a 422 lists every problem; nothing is created).
    pub async fn create(&self, config: &VmConfig) -> Result<VmSummary> {
        let body = serde_json::to_vec(config).map_err(|e| SmartVmError::io("cannot encode the config", e.into()))?;
        self.call(Route::CreateVm, "", "", Some(body)).await
    }

    /// Every VM the agent holds.
    pub async fn list(&self) -> Result<Vec<VmSummary>> {
        self.call(Route::ListVms, "", "", None).await
    }

    /// One VM (`VM_NOT_FOUND` for an unknown id).
    pub async fn get(&self, id: &str) -> Result<VmSummary> {
        self.call(Route::GetVm, id, "", None).await
    }

    /// Pauses a running VM.
    pub async fn pause(&self, id: &str) -> Result<VmSummary> {
        self.call(Route::PauseVm, id, "", None).await
    }

    /// Resumes a paused VM.
    pub async fn resume(&self, id: &str) -> Result<VmSummary> {
        self.call(Route::ResumeVm, id, "", None).await
    }

    /// Stops a VM in order (Ctrl-Alt-Del, then signals), the graceful step waiting up to
    /// `timeout` (the agent's default without).
    pub async fn stop(&self, id: &str, timeout: Option<Duration>) -> Result<StopSummary> {
        let query = timeout.map_or(String::new(), |t| format!("?timeout_ms={}", t.as_millis()));
        self.call(Route::StopVm, id, &query, None).await
    }

    /// Removes a VM and everything it holds on the host; a running VM only with `force`
    /// (else `INVALID_STATE`).
    pub async fn remove(&self, id: &str, force: bool) -> Result<()> {
        self.call::<Option<()>>(Route::RemoveVm, id, &format!("?force={force}"), None).await.map(drop)
    }

    /// The console output kept so far.
    pub async fn logs(&self, id: &str) -> Result<String> {
        let mut out = Vec::new();
        self.stream_logs(id, "follow=false", |chunk| out.extend_from_slice(chunk)).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The console output kept so far, then every new line as it comes, until the VM's console
    /// ends; each chunk goes to `sink`.
    pub async fn follow_logs(&self, id: &str, sink: impl FnMut(&[u8])) -> Result<()> {
        self.stream_logs(id, "follow=true", sink).await
    }

    /// Like [`follow_logs`](Self::follow_logs), but only output from now on (for attaching).
    pub async fn follow_new_logs(&self, id: &str, sink: impl FnMut(&[u8])) -> Result<()> {
        self.stream_logs(id, "follow=true&history=false", sink).await
    }

    /// Snapshots the agent's VM `id` into the new bundle dir `dir` (paused for it, resumed
    /// afterwards unless `keep_paused`); returns the bundle's `snapshot.json`.
    pub async fn snapshot(&self, id: &str, dir: &Path, keep_paused: bool) -> Result<PathBuf> {
        let body = SnapshotRequest { dir: dir.to_path_buf(), keep_paused };
        let body = serde_json::to_vec(&body).map_err(|e| SmartVmError::io("cannot encode the request", e.into()))?;
        let answer: SnapshotSummary = self.call(Route::SnapshotVm, id, "", Some(body)).await?;
        Ok(answer.bundle)
    }

    /// Starts new VMs of the agent from the bundle in `request.dir`.
    pub async fn restore(&self, request: &RestoreRequest) -> Result<Vec<VmSummary>> {
        let body = serde_json::to_vec(request).map_err(|e| SmartVmError::io("cannot encode the request", e.into()))?;
        self.call(Route::RestoreSnapshot, "", "", Some(body)).await
    }

    /// Creates a warm pool (see [`PoolRequest`]).
    pub async fn create_pool(&self, request: &PoolRequest) -> Result<PoolStats> {
        let body = serde_json::to_vec(request).map_err(|e| SmartVmError::io("cannot encode the request", e.into()))?;
        self.call(Route::CreatePool, "", "", Some(body)).await
    }

    /// Every pool's stats, by name.
    pub async fn pools(&self) -> Result<Vec<PoolStats>> {
        self.call(Route::ListPools, "", "", None).await
    }

    /// Pool `name`'s stats (`POOL_NOT_FOUND` for none).
    pub async fn pool(&self, name: &str) -> Result<PoolStats> {
        self.call(Route::GetPool, name, "", None).await
    }

    /// Removes pool `name`: its waiting VMs are destroyed, those checked out stay.
    pub async fn remove_pool(&self, name: &str) -> Result<()> {
        self.call::<Option<()>>(Route::RemovePool, name, "", None).await.map(drop)
    }

    /// A VM of pool `name`, running (a cold pool's configured with `config`, default the
    /// pool's); the agent holds it like one it created.
    pub async fn checkout(&self, name: &str, config: Option<&VmConfig>) -> Result<VmSummary> {
        let request = CheckoutRequest { config: config.cloned() };
        let body = serde_json::to_vec(&request).map_err(|e| SmartVmError::io("cannot encode the request", e.into()))?;
        self.call(Route::CheckoutPool, name, "", Some(body)).await
    }

    /// Streams the agent's VM events from now on into `sink` until the agent closes the stream
    /// (it shuts down) or `sink` returns false.
    pub async fn events(&self, mut sink: impl FnMut(super::wire::VmEvent) -> bool) -> Result<()> {
        let mut pending = Vec::new();
        let open = std::cell::Cell::new(true);
        let feed = |chunk: &[u8]| {
            pending.extend_from_slice(chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Ok(event) = serde_json::from_slice(&line) {
                    if open.get() && !sink(event) {
                        open.set(false);
                    }
                }
            }
        };
        self.stream(&Route::Events.path(""), feed, || !open.get()).await
    }

    /// Types `input` into the VM's serial console (detached VMs of the agent).
    pub async fn send_input(&self, id: &str, input: &[u8]) -> Result<()> {
        self.call::<Option<()>>(Route::VmConsole, id, "", Some(input.to_vec())).await.map(drop)
    }

    async fn stream_logs(&self, id: &str, query: &str, sink: impl FnMut(&[u8])) -> Result<()> {
        self.stream(&format!("{}?{query}", Route::VmLogs.path(id)), sink, || false).await
    }

    /// GETs `path` and hands each chunk of the streamed answer to `sink`, until the stream ends
    /// or `done` says so.
    async fn stream(&self, path: &str, mut sink: impl FnMut(&[u8]), done: impl Fn() -> bool) -> Result<()> {
        let mut response = get(&self.socket, path, None).await?;
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.map_err(|e| wire_error(path, ApiError::Http(e)))?;
            if let Some(data) = frame.data_ref() {
                sink(data);
            }
            if done() {
                break;
            }
        }
        Ok(())
    }
}

fn wire_error(path: &str, source: ApiError) -> SmartVmError {
    SmartVmError::SocketRequestFailed { method: "GET".into(), path: path.into(), source }
}

/// GETs `path` from the agent at `socket`, asking to switch to the `upgrade` protocol when given.
/// An answer other than 2xx or 101 becomes the error its body describes.
pub(super) async fn get(
    socket: &Path,
    path: &str,
    upgrade: Option<&str>,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| SmartVmError::AgentUnavailable { socket: socket.to_path_buf(), source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| wire_error(path, ApiError::Http(e)))?;
    tokio::spawn(conn.with_upgrades());
    let mut request = hyper::Request::get(path).header(hyper::header::HOST, "localhost");
    if let Some(protocol) = upgrade {
        request = request.header(hyper::header::CONNECTION, "upgrade").header(hyper::header::UPGRADE, protocol);
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| wire_error(path, ApiError::Request(e)))?;
    let response = sender.send_request(request).await.map_err(|e| wire_error(path, ApiError::Http(e)))?;
    let status = response.status();
    if status.is_success() || status == hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(response);
    }
    let body = response.into_body().collect().await.map_err(|e| wire_error(path, ApiError::Http(e)))?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => b.into_error(status.as_u16()),
        Err(_) => SmartVmError::Api {
            method: "GET".into(),
            path: path.into(),
            status: status.as_u16(),
            fault_message: Some(text),
        },
    })
}
