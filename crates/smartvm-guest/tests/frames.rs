//! Malformed, oversized and truncated frames get an error frame, never harm the agent.

mod common;

use common::Agent;
use smartvm::guest::protocol::{decode, parse_message, Frame, GuestErrorCode, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn answer_to(agent: &Agent, bytes: &[u8]) -> Option<Reply> {
    let mut conn = UnixStream::connect(&agent.socket).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    let _ = conn.shutdown().await;
    let mut back = Vec::new();
    conn.read_to_end(&mut back).await.unwrap();
    let (frame, _) = decode(&back).unwrap()?;
    let Frame::Message(body) = frame else { panic!("a data frame back: {frame:?}") };
    Some(parse_message(body).unwrap())
}

fn code(reply: Option<Reply>) -> GuestErrorCode {
    match reply {
        Some(Reply::Error(e)) => e.code,
        other => panic!("not an error reply: {other:?}"),
    }
}

#[tokio::test]
async fn every_kind_of_bad_frame_gets_its_error_and_the_agent_serves_on() {
    let agent = Agent::start(&[]).await;
    let frame = |len: u32, rest: &[u8]| [&len.to_be_bytes()[..], rest].concat();
    let cases: Vec<(&str, Vec<u8>, GuestErrorCode)> = vec![
        ("length 0", frame(0, b""), GuestErrorCode::BadFrame),
        ("too long", frame(u32::MAX, b"\x01"), GuestErrorCode::FrameTooLarge),
        ("unknown kind", frame(3, b"\x07{}"), GuestErrorCode::BadFrame),
        ("not JSON", frame(4, b"\x01{{{"), GuestErrorCode::BadFrame),
        ("unknown op", frame(17, b"\x01{\"op\":\"launch\"}"), GuestErrorCode::BadFrame),
        ("data first", frame(3, b"\x02\x00x"), GuestErrorCode::BadFrame),
        ("truncated", frame(100, b"\x01{\"op\""), GuestErrorCode::BadFrame),
    ];
    for (what, bytes, expected) in cases {
        assert_eq!(code(answer_to(&agent, &bytes).await), expected, "{what}");
    }
    assert_eq!(answer_to(&agent, b"").await, None, "a client that says nothing gets nothing");
    // Bad bytes during an exec end that exec only.
    let exec = br#"{"op":"exec","argv":["sleep","1000"]}"#;
    let mut bytes = frame(exec.len() as u32 + 1, &[&b"\x01"[..], exec].concat());
    bytes.extend(frame(2, b"\x09\x00"));
    let mut conn = UnixStream::connect(&agent.socket).await.unwrap();
    conn.write_all(&bytes).await.unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).await.unwrap();
    let (_, used) = decode(&back).unwrap().unwrap();
    let (Frame::Message(body), _) = decode(&back[used..]).unwrap().unwrap() else { panic!() };
    assert!(matches!(parse_message::<Reply>(body).unwrap(), Reply::Error(e) if e.code == GuestErrorCode::BadFrame));
    assert_eq!(agent.client().echo("still here").await.unwrap(), "still here");
}

#[tokio::test]
async fn stdin_beyond_the_window_is_refused() {
    let agent = Agent::start(&[]).await;
    let exec = br#"{"op":"exec","argv":["sleep","1000"],"stdin":true}"#;
    let mut bytes = (exec.len() as u32 + 1).to_be_bytes().to_vec();
    bytes.push(1);
    bytes.extend_from_slice(exec);
    let chunk = vec![0u8; 65536];
    // 256 KiB is granted; 512 KiB is sent at once.
    for _ in 0..8 {
        bytes.extend((chunk.len() as u32 + 2).to_be_bytes());
        bytes.extend([2, 0]);
        bytes.extend(&chunk);
    }
    let mut conn = UnixStream::connect(&agent.socket).await.unwrap();
    // The agent may close before all of it is written: its answer is what counts.
    if let Err(e) = conn.write_all(&bytes).await {
        assert!(matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset), "{e}");
    }
    let mut back = Vec::new();
    // The agent closes with our surplus unread, so the end may come as a reset after its frames.
    if let Err(e) = conn.read_to_end(&mut back).await {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }
    let mut replies = Vec::new();
    let mut at = 0;
    while let Some((Frame::Message(body), used)) = decode(&back[at..]).unwrap() {
        replies.push(parse_message::<Reply>(body).unwrap());
        at += used;
    }
    assert!(matches!(replies.last(), Some(Reply::Error(e)) if e.code == GuestErrorCode::WindowExceeded), "{replies:?}");
}
