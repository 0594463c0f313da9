//! The frame decoder and the frame-order validator on any bytes from a "worker": no
//! panic, and a split stream decodes like one push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustworkers::ipc::{Frame, FrameDecoder, FrameError, FrameOrder};

fn decode(pieces: &[&[u8]]) -> (Vec<Frame>, Option<FrameError>) {
    let mut d = FrameDecoder::new(4096);
    let mut frames = Vec::new();
    for piece in pieces {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else { return };
    let pieces: Vec<&[u8]> = input.chunks(usize::from(step.max(1))).collect();
    let whole = decode(&[input]);
    assert_eq!(whole, decode(&pieces));
    let mut order = FrameOrder::new();
    order.give(1);
    for f in &whole.0 {
        let _ = order.check(f);
    }
});
