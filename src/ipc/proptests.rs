//! Property tests of the frame codec: any bytes split anywhere never panic and decode the
//! same as one push; encode → decode round-trips; frames over the limit are refused.
//! `PROPTEST_CASES` raises the case counts (see `crate::http::proptests::proptest_config`).

use proptest::prelude::*;
use proptest::sample::Index;

use super::{Frame, FrameDecoder, FrameError, FrameOrder, FrameType, HEADER_LEN, encode_frame};
use crate::http::proptests::{proptest_config, split_at_points};

/// Every frame until the first error, then the error.
fn decode_pieces(max_frame: u64, pieces: &[&[u8]]) -> (Vec<Frame>, Option<FrameError>, usize) {
    let mut d = FrameDecoder::new(max_frame);
    let mut frames = Vec::new();
    for piece in pieces {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), d.buffered()),
            }
        }
    }
    (frames, None, d.buffered())
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        prop::sample::select(FrameType::ALL.to_vec()),
        prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(kind, request_id, meta, body)| Frame { kind, request_id, meta, body })
}

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        if encode_frame(&mut out, f.kind, f.request_id, &f.meta, &f.body).is_err() {
            unreachable!("test frames are small");
        }
    }
    out
}

/// Valid headers with random lengths and garbage, so random streams get past the magic.
fn frame_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (any::<u8>(), any::<u64>(), 0u32..64, 0u32..300).prop_map(|(t, id, m, b)| {
            let mut h = b"RW\x01".to_vec();
            h.push(if t < 128 { 16 + t % 9 } else { t });
            h.extend_from_slice(&id.to_be_bytes());
            h.extend_from_slice(&m.to_be_bytes());
            h.extend_from_slice(&b.to_be_bytes());
            h
        }),
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"{}".to_vec()),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(proptest_config(400))]

    #[test]
    fn any_bytes_split_anywhere_same_outcome(input in frame_soup(), cuts in prop::collection::vec(any::<Index>(), 0..10)) {
        let whole = decode_pieces(256, &[&input]);
        prop_assert_eq!(&whole, &decode_pieces(256, &split_at_points(&input, &cuts)));
        // A worker's garbage never makes its validator panic either.
        let mut order = FrameOrder::new();
        for f in &whole.0 {
            let _ = order.check(f);
        }
    }

    #[test]
    fn round_trip_with_any_split(frames in prop::collection::vec(frame(), 0..6), cuts in prop::collection::vec(any::<Index>(), 0..12)) {
        let bytes = wire(&frames);
        let (got, err, left) = decode_pieces(HEADER_LEN as u64 + 240, &split_at_points(&bytes, &cuts));
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn oversize_frames_are_refused(frames in prop::collection::vec(frame(), 1..6), limit in 20u64..300, cuts in prop::collection::vec(any::<Index>(), 0..6)) {
        let bytes = wire(&frames);
        let (got, err, _) = decode_pieces(limit, &split_at_points(&bytes, &cuts));
        let size = |f: &Frame| (HEADER_LEN + f.meta.len() + f.body.len()) as u64;
        // Exactly the frames before the first oversize one come out, then its error.
        let fit = frames.iter().take_while(|f| size(f) <= limit).count();
        prop_assert_eq!(&got[..], &frames[..fit]);
        match frames.get(fit) {
            Some(f) => prop_assert_eq!(err, Some(FrameError::FrameTooLarge { len: size(f), max: limit })),
            None => prop_assert_eq!(err, None),
        }
    }

    /// The REQUEST meta's hand-written JSON is serde's, byte for byte, whatever the
    /// strings hold (quotes, backslashes, controls, any UTF-8).
    #[test]
    fn request_meta_json_is_serdes(
        method in ".{0,8}", path in ".{0,40}", query in proptest::option::of(".{0,20}"),
        headers in prop::collection::vec((".{0,12}", ".{0,30}"), 0..5),
        remote_addr in ".{0,16}", remote_port in any::<u16>(), http_version in ".{0,4}",
        x_request_id in ".{0,20}", forwarded in any::<bool>(), context in prop_oneof![
            Just(serde_json::Value::Null),
            ".{0,10}".prop_map(|s| serde_json::json!({"user": s, "n": 3})),
        ],
    ) {
        let meta = super::RequestMeta {
            method, path, query, headers, remote_addr, remote_port, http_version, x_request_id, forwarded, context,
        };
        let mut ours = Vec::new();
        meta.write_json(&mut ours);
        let serdes = serde_json::to_vec(&meta).unwrap();
        prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&serdes));
    }
}
