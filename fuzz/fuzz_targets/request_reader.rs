//! The request reader on any bytes, split where the first byte says: no panic, and the
//! split gives the same requests and error as one push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustworkers::config::Limits;
use rustworkers::http::{ReadEvent, Request, RequestReader};

const LIMITS: Limits = Limits { max_request_line: 200, max_headers: 12, max_header_bytes: 600, max_body_bytes: 300 };

fn read_all(pieces: &[&[u8]]) -> (Vec<Request>, Option<u16>) {
    let mut reader = RequestReader::new(LIMITS);
    let mut requests = Vec::new();
    for piece in pieces {
        reader.push(piece);
        loop {
            match reader.poll() {
                Ok(ReadEvent::NeedMore) => break,
                Ok(ReadEvent::SendContinue) => {}
                Ok(ReadEvent::Request(r)) => requests.push(r),
                Err(e) => return (requests, Some(e.status)),
            }
        }
    }
    (requests, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else { return };
    let step = usize::from(step.max(1));
    let pieces: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(read_all(&[input]), read_all(&pieces));
});
