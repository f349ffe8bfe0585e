//! `forward`: a host listener relayed to a TCP echo server on the guest's loopback.

mod common;

use common::Agent;
use smartvm::error::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn connections_to_the_host_listener_reach_the_guest_port_and_back() {
    let agent = Agent::start(&[]).await;
    let port = echo_server().await;
    let forward = agent.client().forward(TcpListener::bind("127.0.0.1:0").await.unwrap(), port).unwrap();
    let mut conns = Vec::new();
    for i in 0..5u8 {
        let mut conn = TcpStream::connect(forward.local_addr()).await.unwrap();
        let payload = vec![i; 300_000];
        conn.write_all(&payload).await.unwrap();
        conns.push((conn, payload));
    }
    for (mut conn, payload) in conns {
        conn.shutdown().await.unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, payload, "every byte back, then the end passed on");
    }
}

#[tokio::test]
async fn one_raw_stream_to_a_guest_port() {
    let agent = Agent::start(&[]).await;
    let port = echo_server().await;
    let mut stream = agent.client().connect_port(port).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test]
async fn a_closed_guest_port_is_refused() {
    let agent = Agent::start(&[]).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let error = agent.client().connect_port(closed).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::GuestRefused);
    assert!(error.to_string().contains(&closed.to_string()), "{error}");
}
