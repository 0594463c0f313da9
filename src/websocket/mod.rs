//! WebSockets (RFC 6455), sans-IO: the opening handshake ([`handshake`]) and the frame
//! codec with message reassembly ([`codec`]). The dispatcher owns the socket and relays
//! whole messages to workers (docs/protocol.md, "WebSockets"); nothing here touches I/O.
//!
//! Why not tungstenite: its public API owns the stream (`WebSocket<S: Read + Write>`),
//! while the dispatcher keeps every byte of a connection in its own buffers (budgets,
//! in-order slots, one write per turn). Its frame-level types do not reassemble messages,
//! check UTF-8 or close codes, which is most of the work here.

pub mod codec;
pub mod handshake;

pub use codec::{CloseCode, Decoder, Opcode, Violation, WsEvent, encode_close, encode_frame};
pub use handshake::{HandshakeError, Upgrade, accept_key, check_upgrade};
