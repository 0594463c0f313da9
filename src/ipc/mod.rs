//! The pipe protocol between the dispatcher and its workers (docs/protocol.md): frame
//! header, encoder, incremental decoder ([`frame`]) and the JSON meta of each frame type
//! ([`message`]), and the frame-order rules for a worker connection ([`order`]).
//! Owns no I/O: callers read/write the pipes and feed bytes through here.

pub mod frame;
pub mod message;
pub mod order;
#[cfg(test)]
mod proptests;

pub use frame::{
    EncodeError, Frame, FrameDecoder, FrameError, FrameType, HEADER_LEN, MAGIC, MAX_BODY_LEN, MAX_META_LEN, VERSION,
    encode_empty, encode_frame, encode_json, encode_request, frame_limit_for_body,
};
pub use message::{
    ConfigMeta, CreditMeta, FlowMeta, ForwardMeta, HeartbeatMeta, HelloMeta, LEGACY_MAX_FRAME_BYTES, LogMeta,
    RequestMeta, ResponseMeta, StreamEndMeta, WsAcceptMeta, WsCloseMeta, WsMessageMeta, WsOpenMeta,
};
pub use order::{Event, FrameOrder, Orphans, Violation};

#[cfg(test)]
mod tests {
    //! Golden byte vectors shared with the Python shim's tests, so the two implementations
    //! cannot drift. The file is generated independently of this encoder.
    use super::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    const GOLDEN: &str = include_str!("../../docs/protocol-golden.json");

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        #[serde(rename = "type")]
        kind: String,
        request_id: u64,
        meta: String,
        body_hex: String,
        frame_hex: String,
    }

    fn unhex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2));
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The meta parses as the frame type's struct and serializes back byte for byte, which
    /// pins every field name and the field order the vectors were written in.
    fn typed<T: Serialize + DeserializeOwned>(f: &Frame) -> Vec<u8> {
        let t: T = f.meta_json().unwrap_or_else(|e| panic!("{:?}: {e}", f.kind));
        serde_json::to_vec(&t).unwrap()
    }

    #[test]
    fn golden_vectors() {
        let vectors: Vec<Vector> = serde_json::from_str(GOLDEN).unwrap();
        let mut seen = std::collections::HashSet::new();
        let (mut empty_meta, mut empty_body, mut all_bytes) = (false, false, false);
        for v in &vectors {
            let kind = FrameType::ALL
                .into_iter()
                .find(|t| t.name() == v.kind)
                .unwrap_or_else(|| panic!("{}: unknown type {}", v.name, v.kind));
            seen.insert(kind);
            let body = unhex(&v.body_hex);
            let wire = unhex(&v.frame_hex);
            empty_meta |= v.meta.is_empty();
            empty_body |= body.is_empty();
            all_bytes |= (0..=255u8).all(|b| body.contains(&b));

            let mut out = Vec::new();
            encode_frame(&mut out, kind, v.request_id, v.meta.as_bytes(), &body).unwrap();
            assert_eq!(out, wire, "{}: encoding", v.name);

            let mut d = FrameDecoder::new(1 << 20);
            d.push(&wire);
            let f = d.next_frame().unwrap().unwrap();
            assert_eq!(d.buffered(), 0);
            let want = Frame { kind, request_id: v.request_id, meta: v.meta.as_bytes().to_vec(), body };
            assert_eq!(f, want, "{}: decoding", v.name);

            let reser = match kind {
                FrameType::Config => typed::<ConfigMeta>(&f),
                FrameType::Request => typed::<RequestMeta>(&f),
                FrameType::Response | FrameType::StreamStart => typed::<ResponseMeta>(&f),
                FrameType::Hello => typed::<HelloMeta>(&f),
                FrameType::Heartbeat => typed::<HeartbeatMeta>(&f),
                FrameType::Log => typed::<LogMeta>(&f),
                FrameType::Credit => typed::<CreditMeta>(&f),
                FrameType::Forward => typed::<ForwardMeta>(&f),
                FrameType::Flow => typed::<FlowMeta>(&f),
                FrameType::WsOpen => typed::<WsOpenMeta>(&f),
                FrameType::WsMessage | FrameType::WsMessageOut => typed::<WsMessageMeta>(&f),
                FrameType::WsClose | FrameType::WsCloseOut => typed::<WsCloseMeta>(&f),
                FrameType::WsAccept => typed::<WsAcceptMeta>(&f),
                FrameType::Stop | FrameType::Disconnect | FrameType::StreamChunk | FrameType::StreamEnd => {
                    let m: serde_json::Map<String, serde_json::Value> = f.meta_json().unwrap();
                    assert!(m.is_empty(), "{}: meta should be {{}}", v.name);
                    continue;
                }
            };
            assert_eq!(String::from_utf8(reser).unwrap(), v.meta, "{}: typed meta", v.name);
        }
        assert_eq!(seen.len(), FrameType::ALL.len(), "every frame type has a vector");
        assert!(empty_meta && empty_body && all_bytes, "coverage of edge cases");
    }
}
