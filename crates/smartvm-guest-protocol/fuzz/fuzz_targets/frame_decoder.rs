//! The frame decoder and the message parsers on arbitrary bytes: no panic, no overrun, and
//! every frame that decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smartvm_guest_protocol::{
    data_frame, decode, message_frame, parse_message, ExecControl, Frame, Reply, Request, MAX_FRAME_LEN,
};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode(rest) {
        assert!(used > 4 && used <= rest.len() && used <= MAX_FRAME_LEN as usize + 4);
        match frame {
            Frame::Message(body) => {
                if let Ok(request) = parse_message::<Request>(body) {
                    let again = message_frame(&request).unwrap();
                    let (Frame::Message(body), _) = decode(&again).unwrap().unwrap() else { panic!() };
                    assert_eq!(parse_message::<Request>(body).unwrap(), request);
                }
                let _ = parse_message::<ExecControl>(body);
                let _ = parse_message::<Reply>(body);
            }
            Frame::Data { stream, bytes } => {
                assert_eq!(data_frame(stream, bytes).unwrap(), rest[..used]);
            }
        }
        rest = &rest[used..];
    }
});
