//! Who may talk to the agent: the peer's credentials are taken with `SO_PEERCRED` when the
//! connection is accepted. Root, the agent's own user, or a member of a `smartvm` group may use
//! the VM routes; the snapshot routes, which name host paths the agent reads and writes with its
//! own privileges, only root and the agent's user.

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::net::UnixListener;

use super::policy::Caller;
use crate::agent::wire::ErrorBody;
use crate::error::ErrorCode;

/// The peer's credentials, taken when the connection is accepted.
#[derive(Clone, Debug)]
pub struct Peer(Option<tokio::net::unix::UCred>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        Peer(stream.io().peer_cred().ok())
    }
}

/// The group whose members may use the agent (besides root and its own user).
pub const AGENT_GROUP: &str = "smartvm";

/// Root, the agent's own user, or a member of `group`.
fn permitted(peer: &tokio::net::unix::UCred, group: &str) -> bool {
    if same_user(peer) {
        return true;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_name(group) else { return false };
    let gid = group.gid.as_raw();
    if peer.gid() == gid {
        return true;
    }
    // Supplementary groups of the peer process.
    let status = peer.pid().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
    status.is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x == gid.to_string()))
    })
}

fn same_user(peer: &tokio::net::unix::UCred) -> bool {
    peer.uid() == 0 || peer.uid() == nix::unistd::geteuid().as_raw()
}

/// Middleware: refuses (403 `PERMISSION_DENIED`) peers that may not use the agent at all.
pub(super) async fn check_peer(
    axum::extract::State(agent): axum::extract::State<super::Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match &peer.0 {
        Some(cred) if permitted(cred, &agent.policy.group) => next.run(request).await,
        _ => (
            StatusCode::FORBIDDEN,
            Json(ErrorBody {
                code: ErrorCode::PermissionDenied,
                message: "this user may not use the smartvm agent (root, its owner or the smartvm group only)".into(),
                problems: Vec::new(),
            }),
        )
            .into_response(),
    }
}

impl Peer {
    /// The caller's class in the agent's policy.
    pub fn caller(&self) -> Caller {
        match &self.0 {
            Some(cred) if same_user(cred) => Caller::Owner,
            _ => Caller::Member,
        }
    }
}
