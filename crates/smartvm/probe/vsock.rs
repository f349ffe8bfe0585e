//! A polled virtio-vsock driver (stream sockets, the listening side) and, on top of it, the
//! probe's minimal guest agent: it answers `hello`, `echo`, `health` and `exec` of smartvm's
//! guest protocol (one request per connection, frames as in the `smartvm-guest-protocol` crate)
//! and any other request with the error code `unsupported`. The probe has no processes: `exec`
//! runs one of a few built-in programs (see [`exec`]), so that a host's exec path (the
//! containerd shim's) is testable where Linux cannot boot.

use core::fmt::Write;
use core::ptr::addr_of_mut;

use crate::virtio::{self, Desc, Mmio, Virtq, DESC_WRITE, EMPTY_VIRTQ, QSIZE};

const HDR: usize = 44;
const BUF: usize = 4096;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
const HOST_CID: u64 = 2;
/// The receive buffer the probe advertises per connection.
const BUF_ALLOC: u32 = 64 * 1024;
const MAX_CONNS: usize = 4;
/// The largest request frame the probe takes (hello, echo, health are small).
const MAX_REQUEST: usize = 2048;
/// The guest protocol's stream ids.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;

static mut RXQ: Virtq = EMPTY_VIRTQ;
static mut TXQ: Virtq = EMPTY_VIRTQ;
static mut EVQ: Virtq = EMPTY_VIRTQ;
static mut RX_BUFS: [[u8; BUF]; QSIZE] = [[0; BUF]; QSIZE];
static mut TX_BUF: [u8; BUF] = [0; BUF];
static mut EV_BUF: [u8; 8] = [0; 8];
static mut CONNS: [Conn; MAX_CONNS] = [Conn::CLOSED; MAX_CONNS];
/// The pid the next `exec` reports (1 is the probe itself).
static mut NEXT_PID: u32 = 2;

/// One connection from the host.
#[derive(Clone, Copy)]
struct Conn {
    open: bool,
    answered: bool,
    peer_port: u32,
    fwd_cnt: u32,
    len: usize,
    input: [u8; MAX_REQUEST],
}

impl Conn {
    const CLOSED: Conn = Conn { open: false, answered: false, peer_port: 0, fwd_cnt: 0, len: 0, input: [0; MAX_REQUEST] };
}

/// A packet header (`struct virtio_vsock_hdr`, little endian, packed).
#[derive(Clone, Copy)]
struct Header {
    src_port: u32,
    dst_port: u32,
    len: u32,
    kind: u16,
    op: u16,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    fn parse(b: &[u8]) -> Header {
        Header { src_port: le32(b, 16), dst_port: le32(b, 20), len: le32(b, 24), kind: le16(b, 28), op: le16(b, 30) }
    }
}

/// The endpoint the probe listens as.
#[derive(Clone, Copy)]
struct Endpoint {
    dev: Mmio,
    cid: u64,
    port: u32,
}

/// Listens on `port` and serves connections one request each, forever (Ctrl-Alt-Del resets).
pub fn serve(dev: Mmio, port: u32) -> ! {
    let me = Endpoint { dev, cid: dev.vsock_cid(), port };
    if !start(dev) {
        report!("vsock port={} status=init-failed", port);
        crate::park();
    }
    report!("vsock port={} cid={} status=listening", port, me.cid);
    let khz = crate::tsc_khz();
    let mut next_check = crate::rdtsc();
    // SAFETY: single-threaded guest; the queues and buffers are only touched by this loop.
    let rx = unsafe { &mut *addr_of_mut!(RXQ) };
    // A fresh queue's used index starts at 0; a client may connect (and the device use a
    // buffer) as soon as the line above is out.
    let mut seen = 0;
    loop {
        while rx.used() != seen {
            let (head, written) = rx.used_elem(seen);
            seen = seen.wrapping_add(1);
            let slot = head as usize % QSIZE;
            // SAFETY: the device wrote this buffer and handed it back; it is ours until re-offered.
            let packet = unsafe { &(*addr_of_mut!(RX_BUFS))[slot] };
            handle(me, &packet[..(written as usize).min(BUF)]);
            rx.offer(slot as u16);
            virtio::notify(dev, 0);
        }
        let now = crate::rdtsc();
        if now >= next_check {
            crate::check_ctrl_alt_del();
            next_check = now + khz;
        }
        core::hint::spin_loop();
    }
}

fn start(dev: Mmio) -> bool {
    let Some(status) = virtio::negotiate(dev, 0) else { return false };
    // SAFETY: see `serve`.
    let (rx, tx, ev) = unsafe { (&mut *addr_of_mut!(RXQ), &mut *addr_of_mut!(TXQ), &mut *addr_of_mut!(EVQ)) };
    for (i, desc) in rx.desc.iter_mut().enumerate() {
        // SAFETY: taking the address of a static buffer.
        let addr = unsafe { (*addr_of_mut!(RX_BUFS))[i].as_ptr() } as u64;
        *desc = Desc { addr, len: BUF as u32, flags: DESC_WRITE, next: 0 };
    }
    ev.desc[0] = Desc { addr: addr_of_mut!(EV_BUF) as u64, len: 8, flags: DESC_WRITE, next: 0 };
    if !virtio::add_queue(dev, 0, rx) || !virtio::add_queue(dev, 1, tx) || !virtio::add_queue(dev, 2, ev) {
        return false;
    }
    virtio::driver_ok(dev, status);
    for i in 0..QSIZE {
        rx.offer(i as u16);
    }
    ev.offer(0);
    virtio::notify(dev, 0);
    virtio::notify(dev, 2);
    true
}

fn conns() -> &'static mut [Conn; MAX_CONNS] {
    // SAFETY: see `serve`.
    unsafe { &mut *addr_of_mut!(CONNS) }
}

fn handle(me: Endpoint, packet: &[u8]) {
    if packet.len() < HDR {
        return;
    }
    let h = Header::parse(packet);
    if h.kind != TYPE_STREAM || h.dst_port != me.port {
        if h.op != OP_RST {
            send(me, h.src_port, OP_RST, 0, &[]);
        }
        return;
    }
    let conn = conns().iter_mut().find(|c| c.open && c.peer_port == h.src_port);
    match (h.op, conn) {
        (OP_REQUEST, None) => accept(me, h.src_port),
        (OP_RW, Some(conn)) => {
            let end = (HDR + h.len as usize).min(packet.len());
            receive(me, conn, &packet[HDR..end]);
        }
        (OP_CREDIT_REQUEST, Some(conn)) => {
            send(me, h.src_port, OP_CREDIT_UPDATE, conn.fwd_cnt, &[]);
        }
        (OP_SHUTDOWN, Some(conn)) => {
            send(me, h.src_port, OP_RST, conn.fwd_cnt, &[]);
            conn.open = false;
        }
        (OP_RST, Some(conn)) => conn.open = false,
        (OP_RST | OP_CREDIT_UPDATE | OP_RESPONSE, _) => {}
        _ => send(me, h.src_port, OP_RST, 0, &[]),
    }
}

fn accept(me: Endpoint, peer_port: u32) {
    let Some(conn) = conns().iter_mut().find(|c| !c.open) else {
        send(me, peer_port, OP_RST, 0, &[]);
        return;
    };
    *conn = Conn { open: true, peer_port, ..Conn::CLOSED };
    send(me, peer_port, OP_RESPONSE, 0, &[]);
}

/// Takes request bytes; once a whole frame is in, answers it (later bytes are dropped).
fn receive(me: Endpoint, conn: &mut Conn, bytes: &[u8]) {
    conn.fwd_cnt = conn.fwd_cnt.wrapping_add(bytes.len() as u32);
    if conn.answered {
        return;
    }
    let room = MAX_REQUEST - conn.len;
    let take = bytes.len().min(room);
    conn.input[conn.len..conn.len + take].copy_from_slice(&bytes[..take]);
    conn.len += take;
    if conn.len < 4 {
        return;
    }
    let frame_len = u32::from_be_bytes([conn.input[0], conn.input[1], conn.input[2], conn.input[3]]) as usize;
    let mut frames = Frames::new();
    let mut out = Out::message();
    if frame_len == 0 || frame_len > MAX_REQUEST - 4 {
        out.error("frame_too_large", "the probe takes requests of at most 2044 bytes");
        frames.push(out.frame());
    } else if conn.len < 4 + frame_len {
        return;
    } else if conn.input[4] != 1 {
        out.error("bad_frame", "the request is not a message frame");
        frames.push(out.frame());
    } else {
        answer(&conn.input[5..4 + frame_len], &mut frames);
    }
    conn.answered = true;
    send(me, conn.peer_port, OP_RW, conn.fwd_cnt, frames.bytes());
}

/// The reply to one request body. Nothing is printed per request: each console byte is a VM
/// exit, and a line would cost more than the answer.
fn answer(body: &[u8], frames: &mut Frames) {
    let op = string_field(body, b"op").unwrap_or(b"");
    let mut out = Out::message();
    match op {
        b"exec" => return exec(body, frames),
        b"hello" => {
            let _ = write!(
                out,
                r#"{{"reply":"welcome","name":"smartvm-probe","version":"{}","protocol":1,"capabilities":["hello","echo","health","exec"]}}"#,
                env!("PROBE_VERSION")
            );
        }
        b"health" => {
            out.push(br#"{"reply":"health","uptime_ms":0,"sessions":1,"init":true}"#);
        }
        b"echo" => {
            out.push(br#"{"reply":"echo","text":""#);
            // The text is re-sent as it came: still a valid, escaped JSON string body.
            out.push(string_field(body, b"text").unwrap_or(b""));
            out.push(br#""}"#);
        }
        _ => {
            out.push(br#"{"reply":"error","code":"unsupported","message":"capability not supported by this guest (smartvm-probe answers hello, echo, health and exec): "#);
            out.push(op);
            out.push(br#""}"#);
        }
    }
    frames.push(out.frame());
}

/// `exec` of a built-in program, answered at once (`started`, its output, `exited`):
/// `echo ARGS...` prints its arguments (as the request spelled them); `exit N` ends with N;
/// anything else prints why on stderr and ends with 127. Stdin is not read.
fn exec(body: &[u8], frames: &mut Frames) {
    let mut argv = Strings::of(array_field(body, b"argv").unwrap_or(b""));
    let program = argv.next().unwrap_or(b"");
    // SAFETY: see `serve`.
    let pid = unsafe {
        let pid = NEXT_PID;
        NEXT_PID = pid.wrapping_add(1).max(2);
        pid
    };
    let mut started = Out::message();
    let _ = write!(started, r#"{{"reply":"started","pid":{pid},"stdin_window":0}}"#);
    frames.push(started.frame());
    let code = match program {
        b"echo" => {
            let mut out = Out::data(STDOUT);
            for (i, arg) in argv.enumerate() {
                out.push(if i == 0 { b"" } else { b" " });
                out.push(arg);
            }
            out.push(b"\n");
            frames.push(out.frame());
            0
        }
        b"exit" => argv.next().and_then(crate::parse_u64).map_or(2, |n| (n & 0xff) as u32),
        _ => {
            let mut out = Out::data(STDERR);
            out.push(b"smartvm-probe: ");
            out.push(program);
            out.push(b": not a probe program (echo, exit)\n");
            frames.push(out.frame());
            127
        }
    };
    let mut exited = Out::message();
    let _ = write!(exited, r#"{{"reply":"exited","status":{{"code":{code}}}}}"#);
    frames.push(exited.frame());
}

/// The raw bytes between the brackets of the array field `key` of a flat JSON object.
fn array_field<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let i = value_at(body, key)?;
    if body.get(i) != Some(&b'[') {
        return None;
    }
    let rest = &body[i + 1..];
    let mut in_string = false;
    let mut escaped = false;
    for (j, &b) in rest.iter().enumerate() {
        match (in_string, escaped, b) {
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, _, _) => escaped = false,
            (false, _, b'"') => in_string = true,
            (false, _, b']') => return Some(&rest[..j]),
            _ => {}
        }
    }
    None
}

/// Where the value of field `key` of a flat JSON object starts (after its colon).
fn value_at(body: &[u8], key: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at + key.len() + 2 <= body.len() {
        if body[at] == b'"' && body[at + 1..].starts_with(key) && body.get(at + 1 + key.len()) == Some(&b'"') {
            let mut i = at + key.len() + 2;
            while matches!(body.get(i), Some(b' ' | b'\t' | b'\n' | b'\r' | b':')) {
                i += 1;
            }
            return Some(i);
        }
        at += 1;
    }
    None
}

/// The string items (still escaped) of a JSON array's inside.
struct Strings<'a> {
    rest: &'a [u8],
}

impl<'a> Strings<'a> {
    fn of(inside: &'a [u8]) -> Strings<'a> {
        Strings { rest: inside }
    }
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b == b'"')? + 1;
        let mut escaped = false;
        for (j, &b) in self.rest[start..].iter().enumerate() {
            match (escaped, b) {
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    let item = &self.rest[start..start + j];
                    self.rest = &self.rest[start + j + 1..];
                    return Some(item);
                }
                _ => escaped = false,
            }
        }
        self.rest = &[];
        None
    }
}

/// The raw (still escaped) value of the string field `key` of a flat JSON object.
fn string_field<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let i = value_at(body, key)?;
    if body.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut escaped = false;
    for (j, &b) in body[start..].iter().enumerate() {
        match (escaped, b) {
            (false, b'\\') => escaped = true,
            (false, b'"') => return Some(&body[start..start + j]),
            _ => escaped = false,
        }
    }
    None
}

/// The frames answering one request, back to back: one packet to the host.
struct Frames {
    buf: [u8; BUF - HDR],
    len: usize,
}

impl Frames {
    fn new() -> Frames {
        Frames { buf: [0; BUF - HDR], len: 0 }
    }

    /// Appends a whole frame (one that does not fit is left out whole, never cut).
    fn push(&mut self, frame: &[u8]) {
        if frame.len() <= self.buf.len() - self.len {
            self.buf[self.len..self.len + frame.len()].copy_from_slice(frame);
            self.len += frame.len();
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// One frame being built: `[length BE][0x01][JSON]` or `[length BE][0x02][stream][bytes]`.
struct Out {
    buf: [u8; 2 * MAX_REQUEST + 512],
    len: usize,
    kind: u8,
}

impl Out {
    fn message() -> Out {
        Out { buf: [0; 2 * MAX_REQUEST + 512], len: 5, kind: 1 }
    }

    fn data(stream: u8) -> Out {
        let mut out = Out { buf: [0; 2 * MAX_REQUEST + 512], len: 6, kind: 2 };
        out.buf[5] = stream;
        out
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn error(&mut self, code: &str, message: &str) {
        let _ = write!(self, r#"{{"reply":"error","code":"{code}","message":"{message}"}}"#);
    }

    fn frame(&mut self) -> &[u8] {
        let body = (self.len - 4) as u32;
        self.buf[..4].copy_from_slice(&body.to_be_bytes());
        self.buf[4] = self.kind;
        &self.buf[..self.len]
    }
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Sends one packet to the host and waits until the device has taken it.
fn send(me: Endpoint, peer_port: u32, op: u16, fwd_cnt: u32, payload: &[u8]) {
    // SAFETY: see `serve`.
    let (tx, buf) = unsafe { (&mut *addr_of_mut!(TXQ), &mut *addr_of_mut!(TX_BUF)) };
    let n = payload.len().min(BUF - HDR);
    buf[..HDR].fill(0);
    buf[0..8].copy_from_slice(&me.cid.to_le_bytes());
    buf[8..16].copy_from_slice(&HOST_CID.to_le_bytes());
    buf[16..20].copy_from_slice(&me.port.to_le_bytes());
    buf[20..24].copy_from_slice(&peer_port.to_le_bytes());
    buf[24..28].copy_from_slice(&(n as u32).to_le_bytes());
    buf[28..30].copy_from_slice(&TYPE_STREAM.to_le_bytes());
    buf[30..32].copy_from_slice(&op.to_le_bytes());
    buf[36..40].copy_from_slice(&BUF_ALLOC.to_le_bytes());
    buf[40..44].copy_from_slice(&fwd_cnt.to_le_bytes());
    buf[HDR..HDR + n].copy_from_slice(&payload[..n]);
    tx.desc[0] = Desc { addr: buf.as_ptr() as u64, len: (HDR + n) as u32, flags: 0, next: 0 };
    let before = tx.used();
    tx.offer(0);
    virtio::notify(me.dev, 1);
    let mut spins: u64 = 0;
    while tx.used() == before && spins < 1_000_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
}
