//! Talking to the agent inside a guest (`smartvm-guest`, or the probe guest's minimal one):
//! [`GuestClient`] runs commands, copies files in and out, forwards ports.
//!
//! Every operation opens its own connection (see [`protocol`] for the frames), so operations run
//! side by side without sharing a stream, and each has its own back-pressure. A VM's client comes
//! from [`MicroVm::guest`](crate::vm::MicroVm::guest); a `smartvm-guest` listening on a Unix
//! socket (no VM) is reached with [`GuestClient::new`] and [`GuestAddress::Unix`].

mod connect;
mod copy;
mod exec;
mod forward;

use std::sync::Arc;
use std::time::Duration;

use smartvm_guest_protocol::{
    parse_message, Capability, FrameReader, FrameWriter, OwnedFrame, Reply, Request, StatReply, PROTOCOL_VERSION,
};
use tokio::io::{ReadHalf, WriteHalf};

pub use connect::{BadGuestAddress, Connecting, GuestAddress, GuestConnection, GuestConnector, GuestIo};
pub use copy::CopyReport;
pub use exec::{ExecEvent, ExecHandle, ExecStdin, Execution, Output};
pub use forward::{GuestStream, PortForward};
/// The wire protocol: frames, messages, limits.
pub use smartvm_guest_protocol as protocol;

use crate::error::{GuestError, Result};

/// How long connecting and each reply to a request may take, unless set.
pub const DEFAULT_GUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one guest agent. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct GuestClient {
    connector: Arc<dyn GuestConnector>,
    timeout: Duration,
}

/// Who answered `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// `smartvm-guest` or `smartvm-probe`.
    pub name: String,
    /// The agent's version.
    pub version: String,
    /// Its protocol version.
    pub protocol: u32,
    /// What it can do.
    pub capabilities: Vec<Capability>,
}

impl Welcome {
    /// Whether the agent can do `capability`.
    pub fn supports(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// The agent's answer to `health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// How long the agent has run.
    pub uptime: Duration,
    /// Connections it serves, this one included.
    pub sessions: u32,
    /// Whether it is the guest's PID 1.
    pub init: bool,
}

impl GuestClient {
    /// A client of the agent at `address`.
    pub fn new(address: GuestAddress) -> GuestClient {
        GuestClient::with_connector(Arc::new(address))
    }

    /// A client that opens its connections through `connector`.
    pub fn with_connector(connector: Arc<dyn GuestConnector>) -> GuestClient {
        GuestClient { connector, timeout: DEFAULT_GUEST_TIMEOUT }
    }

    /// Sets how long connecting and each reply may take (not a command's run time).
    pub fn with_timeout(mut self, timeout: Duration) -> GuestClient {
        self.timeout = timeout;
        self
    }

    /// Where the agent is, for messages.
    pub fn describe(&self) -> String {
        self.connector.describe()
    }

    /// Who is there and what it can do.
    pub async fn hello(&self) -> Result<Welcome> {
        let request =
            Request::Hello { client: format!("smartvm {}", env!("CARGO_PKG_VERSION")), protocol: PROTOCOL_VERSION };
        match self.ask(request, "hello").await? {
            Reply::Welcome { name, version, protocol, capabilities } => {
                Ok(Welcome { name, version, protocol, capabilities })
            }
            other => Err(unexpected("hello", &other)),
        }
    }

    /// Whether the agent is alive, and its load.
    pub async fn health(&self) -> Result<Health> {
        match self.ask(Request::Health, "health").await? {
            Reply::Health { uptime_ms, sessions, init } => {
                Ok(Health { uptime: Duration::from_millis(uptime_ms), sessions, init })
            }
            other => Err(unexpected("health", &other)),
        }
    }

    /// Sends `text` and returns what came back (a round trip through the guest).
    pub async fn echo(&self, text: &str) -> Result<String> {
        match self.ask(Request::Echo { text: text.to_owned() }, "echo").await? {
            Reply::Echo { text } => Ok(text),
            other => Err(unexpected("echo", &other)),
        }
    }

    /// Metadata of an absolute guest path (a final symlink is not followed).
    pub async fn stat(&self, path: &str) -> Result<StatReply> {
        match self.ask(Request::Stat { path: path.to_owned() }, "stat").await? {
            Reply::Stat(stat) => Ok(stat),
            other => Err(unexpected("stat", &other)),
        }
    }

    /// Powers the guest off (an agent that is PID 1) or ends the agent (a service).
    pub async fn shutdown(&self) -> Result<()> {
        match self.ask(Request::Shutdown, "shutdown").await? {
            Reply::ShuttingDown => Ok(()),
            other => Err(unexpected("shutdown", &other)),
        }
    }

    /// A raw connection to the agent (for relays such as the host agent's): nothing sent yet.
    pub async fn open(&self) -> Result<GuestConnection> {
        connect::connect(self.connector.as_ref(), self.timeout).await
    }

    async fn ask(&self, request: Request, operation: &'static str) -> Result<Reply> {
        let mut session = Session::open(self, &request, operation).await?;
        session.reply().await
    }
}

/// One connection carrying one request.
pub(crate) struct Session {
    reader: FrameReader<ReadHalf<GuestConnection>>,
    writer: FrameWriter<WriteHalf<GuestConnection>>,
    operation: &'static str,
    timeout: Duration,
}

impl Session {
    async fn open(client: &GuestClient, request: &Request, operation: &'static str) -> Result<Session> {
        let stream = connect::connect(client.connector.as_ref(), client.timeout).await?;
        let (read, write) = tokio::io::split(stream);
        let mut session = Session {
            reader: FrameReader::new(read),
            writer: FrameWriter::new(write),
            operation,
            timeout: client.timeout,
        };
        if let Err(e) = session.writer.message(request).await {
            // An agent at its limit answers `busy` and closes without reading: its answer may
            // be waiting even though the request could not be written.
            if let Ok(Some(OwnedFrame::Message(body))) = session.reader.read_frame().await {
                reply_of(operation, &body)?;
            }
            return Err(GuestError::Unavailable { address: client.describe(), source: e }.into());
        }
        Ok(session)
    }

    /// The next reply, within the client's timeout.
    async fn reply(&mut self) -> Result<Reply> {
        match tokio::time::timeout(self.timeout, self.next_reply()).await {
            Ok(reply) => reply,
            Err(_) => Err(GuestError::Timeout { operation: self.operation, after: self.timeout }.into()),
        }
    }

    /// The next reply, however long it takes (a command's exit).
    async fn next_reply(&mut self) -> Result<Reply> {
        match self.reader.read_frame().await {
            Ok(Some(OwnedFrame::Message(body))) => reply_of(self.operation, &body),
            Ok(Some(OwnedFrame::Data { stream, .. })) => {
                Err(protocol(self.operation, format!("{stream:?} data, not a reply")))
            }
            Ok(None) => Err(protocol(self.operation, "the connection closed without a reply".into())),
            Err(e) => Err(protocol(self.operation, e.to_string())),
        }
    }
}

/// A reply, with an error reply turned into [`GuestError::Refused`].
fn reply_of(operation: &'static str, body: &[u8]) -> Result<Reply> {
    match parse_message::<Reply>(body) {
        Ok(Reply::Error(error)) => {
            Err(GuestError::Refused { operation, code: error.code, message: error.message }.into())
        }
        Ok(reply) => Ok(reply),
        Err(e) => Err(protocol(operation, e.to_string())),
    }
}

fn protocol(operation: &'static str, reason: String) -> crate::SmartVmError {
    GuestError::Protocol { operation, reason }.into()
}

fn unexpected(operation: &'static str, reply: &Reply) -> crate::SmartVmError {
    protocol(operation, format!("unexpected reply {reply:?}"))
}
