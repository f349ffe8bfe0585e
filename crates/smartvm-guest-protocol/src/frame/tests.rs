use super::*;
use crate::{ExecControl, ExitStatus, Reply, Request, WindowSize, MAX_FRAME_LEN};

fn frame_bytes(len: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(body);
    out
}

#[test]
fn a_message_round_trips_through_encode_and_decode() {
    let request = Request::Exec(crate::ExecRequest {
        argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
        tty: Some(WindowSize { rows: 24, cols: 80 }),
        ..Default::default()
    });
    let bytes = message_frame(&request).unwrap();
    let (frame, used) = decode(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let Frame::Message(body) = frame else { panic!("not a message: {frame:?}") };
    assert_eq!(parse_message::<Request>(body).unwrap(), request);
}

#[test]
fn data_frames_carry_their_stream_and_an_empty_one_ends_it() {
    let bytes = data_frame(Stream::Stderr, b"oops").unwrap();
    assert_eq!(decode(&bytes).unwrap(), Some((Frame::Data { stream: Stream::Stderr, bytes: b"oops" }, bytes.len())));
    let end = data_frame(Stream::Stdin, &[]).unwrap();
    assert_eq!(end, vec![0, 0, 0, 2, 2, 0]);
    assert_eq!(decode(&end).unwrap(), Some((Frame::Data { stream: Stream::Stdin, bytes: &[] }, 6)));
}

#[test]
fn a_partial_frame_asks_for_more_and_two_frames_decode_one_at_a_time() {
    let mut bytes = message_frame(&Request::Health).unwrap();
    let first_len = bytes.len();
    bytes.extend(data_frame(Stream::Stdout, b"x").unwrap());
    for cut in 0..first_len {
        assert_eq!(decode(&bytes[..cut]).unwrap(), None, "cut at {cut}");
    }
    let (_, used) = decode(&bytes).unwrap().unwrap();
    assert_eq!(used, first_len);
    let (frame, _) = decode(&bytes[used..]).unwrap().unwrap();
    assert_eq!(frame, Frame::Data { stream: Stream::Stdout, bytes: b"x" });
}

#[test]
fn bad_headers_are_refused_before_their_body_arrives() {
    assert_eq!(decode(&frame_bytes(0, 1, b"")), Err(FrameError::Empty));
    assert_eq!(decode(&(MAX_FRAME_LEN + 1).to_be_bytes()), Err(FrameError::TooLarge { len: MAX_FRAME_LEN + 1 }));
    assert_eq!(decode(&frame_bytes(100, 9, b"")), Err(FrameError::UnknownKind(9)));
    assert_eq!(decode(&frame_bytes(1, 2, b"")), Err(FrameError::MissingStream));
    assert_eq!(decode(&frame_bytes(2, 2, &[7])), Err(FrameError::UnknownStream(7)));
}

#[test]
fn a_frame_over_the_limit_cannot_be_encoded() {
    let big = vec![0u8; MAX_FRAME_LEN as usize];
    assert!(matches!(data_frame(Stream::Stdout, &big), Err(FrameError::TooLarge { .. })));
    assert!(data_frame(Stream::Stdout, &big[..MAX_FRAME_LEN as usize - 2]).is_ok());
}

#[test]
fn messages_that_are_not_the_expected_type_are_bad_messages() {
    for body in [&b"{"[..], b"[]", b"{\"op\":\"launch\"}", b"{\"op\":\"echo\",\"text\":\"a\",\"x\":1}", b"\xff"] {
        assert!(matches!(parse_message::<Request>(body), Err(FrameError::BadMessage { .. })), "{body:?}");
    }
    assert!(parse_message::<ExecControl>(br#"{"op":"signal","signal":15}"#).is_ok());
}

#[test]
fn replies_have_a_stable_json_shape() {
    let exited = Reply::Exited { status: ExitStatus::Signal(9) };
    assert_eq!(serde_json::to_string(&exited).unwrap(), r#"{"reply":"exited","status":{"signal":9}}"#);
    let welcome: Reply = parse_message(
        br#"{"reply":"welcome","name":"smartvm-probe","version":"1","protocol":1,"capabilities":["hello","echo","teleport"]}"#,
    )
    .unwrap();
    let Reply::Welcome { capabilities, .. } = welcome else { panic!() };
    assert_eq!(capabilities, [crate::Capability::Hello, crate::Capability::Echo, crate::Capability::Unknown]);
    assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
}

/// A cheap stand-in for the fuzzer (scripts/fuzz.sh) that runs on stable in every test run:
/// random byte strings with plausible headers never panic the decoder, and what decodes
/// re-encodes to the same bytes.
#[test]
fn random_bytes_never_break_the_decoder() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 48) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 5 && next() % 2 == 0 {
            let claimed = (next() % (len as u64)) as u32;
            bytes[..4].copy_from_slice(&claimed.to_be_bytes());
            bytes[4] = 1 + (next() % 2) as u8;
        }
        let mut rest = &bytes[..];
        while let Ok(Some((frame, used))) = decode(rest) {
            assert!(used > 4 && used <= rest.len());
            if let Frame::Data { stream, bytes } = frame {
                assert_eq!(data_frame(stream, bytes).unwrap(), rest[..used]);
            } else if let Frame::Message(body) = frame {
                let _ = parse_message::<Request>(body);
                let _ = parse_message::<Reply>(body);
            }
            rest = &rest[used..];
        }
    }
}

#[test]
fn a_workload_s_exit_report_is_read_off_the_console() {
    let console = ["boot", "smartvm-guest exit=3", "reboot: Power down"];
    assert_eq!(crate::reported_exit(console), Some(3));
    assert_eq!(crate::reported_exit(["smartvm-probe line n=0", "smartvm-probe exit code=7"]), Some(7));
    assert_eq!(crate::reported_exit(["smartvm-guest exit=999", "nothing"]), None);
    assert_eq!(crate::reported_exit(Vec::<&str>::new()), None);
}
