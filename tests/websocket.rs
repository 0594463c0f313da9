//! WebSockets through the real dispatcher to the native `echo` worker (which echoes every
//! message; the text `close` makes it close with 4000; `?refuse` refuses the handshake).
//! The client below speaks RFC 6455 from the bytes up, so every rule is exercised as a
//! real client would (masking, fragments, control frames, close codes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::pools::poll;
use crate::util::{TestServer, get, pid_alive};

fn server(extra_pool: &str, extra_server: &str) -> TestServer {
    TestServer::start(&format!(
        r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"
{extra_server}

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "ws"
routes = ["/ws/**"]
native = "echo"
{extra_pool}
"#
    ))
}

/// A frame as the client reads it.
#[derive(Debug, PartialEq)]
enum In {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The 101 response head.
    head: String,
}

impl Ws {
    /// Connect and complete the handshake; panics unless the answer is 101.
    fn connect(addr: &str, path: &str, protocols: &[&str]) -> Ws {
        match Ws::try_connect(addr, path, protocols) {
            Ok(ws) => ws,
            Err(head) => panic!("handshake refused:\n{head}"),
        }
    }

    /// The handshake; `Err(head)` when the answer is not 101.
    fn try_connect(addr: &str, path: &str, protocols: &[&str]) -> Result<Ws, String> {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if !protocols.is_empty() {
            req.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", protocols.join(", ")));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let mut ws = Ws { stream, buf: Vec::new(), head: String::new() };
        let end = loop {
            if let Some(p) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if !ws.fill() {
                return Err(String::from_utf8_lossy(&ws.buf).into_owned());
            }
        };
        ws.head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
        ws.buf.drain(..end);
        if !ws.head.starts_with("HTTP/1.1 101 ") {
            let mut rest = ws.head.clone();
            rest.push_str(&String::from_utf8_lossy(&ws.buf));
            return Err(rest);
        }
        Ok(ws)
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// Send one masked frame.
    fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.stream.write_all(&client_frame(fin, opcode, payload)).expect("send frame");
    }

    fn text(&mut self, s: &str) {
        self.frame(true, 1, s.as_bytes());
    }

    /// The next frame, `None` when the connection closed.
    fn recv(&mut self) -> Option<In> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Whether the server closes the TCP connection (EOF) within `timeout`.
    fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut tmp = [0u8; 4096];
            match self.stream.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn parse_server_frame(b: &[u8]) -> Option<(In, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[0] & 0x80, 0x80, "the server sends unfragmented frames");
    assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
    let (len, at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = b.get(at..at + len)?.to_vec();
    let frame = match b[0] & 0x0f {
        1 => In::Text(String::from_utf8(payload).expect("server text is UTF-8")),
        2 => In::Binary(payload),
        8 => match payload.len() {
            0 => In::Close(None, String::new()),
            _ => In::Close(
                Some(u16::from_be_bytes([payload[0], payload[1]])),
                String::from_utf8_lossy(&payload[2..]).into_owned(),
            ),
        },
        9 => In::Ping(payload),
        10 => In::Pong(payload),
        op => panic!("unexpected opcode {op}"),
    };
    Some((frame, at + len))
}

#[test]
fn echo_text_binary_fragments_ping_and_big_messages() {
    let s = server("num_workers = 2", "");
    let mut ws = Ws::connect(&s.addr, "/ws/echo", &["chat", "superchat"]);
    let head = ws.head.to_ascii_lowercase();
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    assert!(head.contains("sec-websocket-protocol: chat\r\n"), "the first offer is chosen: {head}");
    ws.text("hello");
    assert_eq!(ws.recv(), Some(In::Text("hello".into())));
    ws.frame(true, 2, &[0, 1, 2, 255]);
    assert_eq!(ws.recv(), Some(In::Binary(vec![0, 1, 2, 255])));
    // Fragmented, with a ping in between: the dispatcher answers the ping itself and
    // relays the message whole.
    ws.frame(false, 1, b"frag");
    ws.frame(true, 9, b"are you there");
    ws.frame(false, 0, b"men");
    ws.frame(true, 0, "ted ✓".as_bytes());
    assert_eq!(ws.recv(), Some(In::Pong(b"are you there".to_vec())));
    assert_eq!(ws.recv(), Some(In::Text("fragmented ✓".into())));
    // 1 MiB each way.
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    ws.frame(true, 2, &big);
    assert_eq!(ws.recv(), Some(In::Binary(big)));
    // The worker closes on request; the client sees its code and reason.
    ws.text("close");
    assert_eq!(ws.recv(), Some(In::Close(Some(4000), "closed on request".into())));
    assert!(ws.closed_within(Duration::from_secs(5)));
}

#[test]
fn client_close_is_echoed_and_frees_the_worker() {
    // One worker of one credit: a socket that was not released would block the next.
    let s = server("num_workers = 1\ntimeout = 3", "");
    for round in 0..3 {
        let mut ws = Ws::connect(&s.addr, "/ws/x", &[]);
        ws.text(&format!("round {round}"));
        assert_eq!(ws.recv(), Some(In::Text(format!("round {round}"))));
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        ws.frame(true, 8, &close);
        assert_eq!(ws.recv(), Some(In::Close(Some(1000), String::new())));
        assert!(ws.closed_within(Duration::from_secs(5)));
    }
    // A client that vanishes mid-message (half a frame, then gone) frees it too.
    let mut ws = Ws::connect(&s.addr, "/ws/x", &[]);
    let frame = client_frame(true, 1, &[b'a'; 1000]);
    ws.stream.write_all(&frame[..500]).unwrap();
    drop(ws);
    let mut ws = Ws::connect(&s.addr, "/ws/x", &[]);
    ws.text("still here");
    assert_eq!(ws.recv(), Some(In::Text("still here".into())));
    // The socket holds the only credit; once its client leaves, plain requests to the
    // same pool are served again.
    drop(ws);
    assert_eq!(get(&s.addr, "/ws/plain").status, 200, "plain requests still go to the same pool");
}

#[test]
fn protocol_violations_close_with_their_codes() {
    let s = server("num_workers = 2\nmax_message_bytes = 4096", "");
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("invalid UTF-8 text", client_frame(true, 1, &[0xc3, 0x28]), 1007),
        ("a message over max_message_bytes", client_frame(true, 2, &[0; 5000]), 1009),
        ("an unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("a continuation without a start", client_frame(true, 0, b"x"), 1002),
    ];
    for (what, bytes, code) in cases {
        let mut ws = Ws::connect(&s.addr, "/ws/x", &[]);
        ws.stream.write_all(&bytes).unwrap();
        match ws.recv() {
            Some(In::Close(Some(c), _)) => assert_eq!(c, code, "{what}"),
            other => panic!("{what}: expected close {code}, got {other:?}"),
        }
        assert!(ws.closed_within(Duration::from_secs(5)), "{what}: connection not closed");
    }
}

#[test]
fn bad_handshakes_and_refusals() {
    let s = server("num_workers = 2", "");
    let refused = Ws::try_connect(&s.addr, "/ws/x?refuse", &[]).err().expect("refused");
    assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
    let raw = |extra: &str| {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = format!("GET /ws/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n");
        c.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let old = raw("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n");
    assert!(old.starts_with("HTTP/1.1 426 "), "{old}");
    assert!(old.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{old}");
    let nokey = raw("Sec-WebSocket-Version: 13\r\n");
    assert!(nokey.starts_with("HTTP/1.1 400 "), "{nokey}");
}

#[test]
fn worker_killed_with_sockets_open_closes_them_1011() {
    let s = server("num_workers = 1", "");
    let mut ws = Ws::connect(&s.addr, "/ws/x", &[]);
    ws.text("hi");
    assert_eq!(ws.recv(), Some(In::Text("hi".into())));
    let pid = s.worker_pids("ws")[0];
    // SAFETY: kill(2) on a pid of this test's own server's worker.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    match ws.recv() {
        Some(In::Close(Some(1011), _)) => {}
        other => panic!("expected close 1011, got {other:?}"),
    }
    assert!(poll(Duration::from_secs(5), || (!pid_alive(pid)).then_some(())).is_some());
    // The replacement takes new sockets.
    let mut again = poll(Duration::from_secs(10), || Ws::try_connect(&s.addr, "/ws/x", &[]).ok()).expect("reconnect");
    again.text("back");
    assert_eq!(again.recv(), Some(In::Text("back".into())));
}

#[test]
fn graceful_stop_closes_sockets_1001_at_the_shutdown_timeout() {
    let mut s = server("num_workers = 2", "shutdown_timeout = 1");
    let mut ws = Ws::connect(&s.addr, "/ws/x", &[]);
    ws.text("hi");
    assert_eq!(ws.recv(), Some(In::Text("hi".into())));
    let began = Instant::now();
    s.signal(libc::SIGTERM);
    // Until the timeout the socket still works.
    ws.text("during the drain");
    assert_eq!(ws.recv(), Some(In::Text("during the drain".into())));
    match ws.recv() {
        Some(In::Close(Some(1001), _)) => {}
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert!(began.elapsed() >= Duration::from_millis(900), "closed before shutdown_timeout");
    assert!(s.wait_exit(Duration::from_secs(10)).is_some(), "server did not exit");
}

#[test]
fn idle_socket_is_pinged_then_closed() {
    let s = server("num_workers = 2\nwebsocket_idle_timeout = 1", "");
    let mut ws = Ws::connect(&s.addr, "/ws/x", &[]);
    // Half the timeout of silence: a ping; no answer: a close.
    assert!(matches!(ws.recv(), Some(In::Ping(_))));
    match ws.recv() {
        Some(In::Close(Some(1000), reason)) => assert!(reason.contains("idle"), "{reason}"),
        other => panic!("expected an idle close, got {other:?}"),
    }
    // A client that answers pings stays.
    let mut ws = Ws::connect(&s.addr, "/ws/x", &[]);
    for _ in 0..3 {
        match ws.recv() {
            Some(In::Ping(p)) => ws.frame(true, 10, &p),
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    ws.text("alive");
    assert_eq!(ws.recv(), Some(In::Text("alive".into())));
}
