//! One connection, one request: read it, check it, dispatch it, answer failures as error frames.

use std::sync::Arc;
use std::time::Duration;

use smartvm_guest_protocol::{
    parse_message, Capability, ErrorReply, FrameReader, FrameWriter, GuestErrorCode, OwnedFrame, Reply, Request,
    AGENT_NAME, PROTOCOL_VERSION,
};

use crate::agent::Agent;
use crate::listen::{BoxedConnection, Listener};
use crate::op::{send, OpError, Reader, Writer};
use crate::options::Options;

/// How long a new connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What this agent can do.
pub const CAPABILITIES: [Capability; 10] = [
    Capability::Hello,
    Capability::Health,
    Capability::Echo,
    Capability::Stat,
    Capability::Exec,
    Capability::Pty,
    Capability::CopyIn,
    Capability::CopyOut,
    Capability::Forward,
    Capability::Shutdown,
];

/// Runs the agent until shutdown, a signal, or the workload's end; returns the exit status.
pub async fn serve(options: Options, pid1: bool) -> i32 {
    let agent = match Agent::new(&options, pid1) {
        Ok(agent) => Arc::new(agent),
        Err(e) => {
            eprintln!("smartvm-guest: cannot watch child processes: {e}");
            return 1;
        }
    };
    if pid1 {
        crate::init::prepare(options.ip.as_deref());
    }
    for address in options.addresses() {
        match Listener::bind(&address) {
            Ok(listener) => {
                tokio::spawn(accept_loop(agent.clone(), listener));
            }
            Err(e) => {
                eprintln!("smartvm-guest: cannot listen on {address:?}: {e}");
                return 1;
            }
        }
    }
    crate::init::run_until_end(&agent, &options.workload).await
}

async fn accept_loop(agent: Arc<Agent>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(connection) => {
                tokio::spawn(handle(agent.clone(), connection));
            }
            // Out of descriptors and the like: the next accept may work once sessions end.
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

async fn handle(agent: Arc<Agent>, connection: BoxedConnection) {
    let (read, write) = tokio::io::split(connection);
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    let Ok(_permit) = agent.sessions.clone().try_acquire_owned() else {
        let busy = OpError::new(GuestErrorCode::Busy, format!("serving {} sessions already", agent.max_sessions));
        let _ = send_error(&mut writer, busy).await;
        return;
    };
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut reader)).await {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return send_error(&mut writer, e).await,
        Err(_) => return send_error(&mut writer, OpError::new(GuestErrorCode::BadFrame, "no request in time")).await,
    };
    if let Err(e) = dispatch(&agent, request, reader, &mut writer).await {
        send_error(&mut writer, e).await;
    }
}

async fn read_request(reader: &mut Reader) -> Result<Option<Request>, OpError> {
    match reader.read_frame().await {
        Ok(Some(OwnedFrame::Message(body))) => parse_message(&body).map(Some).map_err(|e| OpError::frame(&e)),
        Ok(Some(OwnedFrame::Data { .. })) => {
            Err(OpError::new(GuestErrorCode::BadFrame, "a data frame before the request"))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(OpError::read(&e)),
    }
}

async fn dispatch(agent: &Agent, request: Request, reader: Reader, writer: &mut Writer) -> Result<(), OpError> {
    let reply = match request {
        Request::Hello { .. } => Reply::Welcome {
            name: AGENT_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
            capabilities: CAPABILITIES.to_vec(),
        },
        Request::Health => Reply::Health {
            uptime_ms: agent.started.elapsed().as_millis() as u64,
            sessions: agent.max_sessions - agent.sessions.available_permits() as u32,
            init: agent.pid1,
        },
        Request::Echo { text } => Reply::Echo { text },
        Request::Stat { path } => Reply::Stat(crate::stat::stat(&path)?),
        Request::Exec(exec) => return crate::exec::run(agent, exec, reader, writer).await,
        Request::CopyIn { dir } => return crate::copy::copy_in(&dir, reader, writer).await,
        Request::CopyOut { path, name } => return crate::copy::copy_out(&path, name, writer).await,
        Request::Forward { port } => return crate::forward::forward(port, reader, writer).await,
        Request::Shutdown => {
            send(writer, &Reply::ShuttingDown).await?;
            agent.shutdown.notify_one();
            return Ok(());
        }
    };
    send(writer, &reply).await
}

async fn send_error(writer: &mut Writer, error: OpError) {
    let _ = writer.message(&Reply::Error(ErrorReply { code: error.code, message: error.message })).await;
}
