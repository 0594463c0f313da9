//! The chunked decoder, reached through the request reader: a chunked POST head followed
//! by any bytes, split where the first byte says. No panic, same outcome as one push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustworkers::config::Limits;
use rustworkers::http::{ReadEvent, RequestReader};

const LIMITS: Limits = Limits { max_request_line: 200, max_headers: 12, max_header_bytes: 600, max_body_bytes: 4096 };
const HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

fn body(pieces: &[&[u8]]) -> Result<Option<Vec<u8>>, u16> {
    let mut reader = RequestReader::new(LIMITS);
    reader.push(HEAD);
    for piece in pieces {
        reader.push(piece);
        match reader.poll() {
            Ok(ReadEvent::Request(r)) => return Ok(Some(r.body)),
            Ok(_) => {}
            Err(e) => return Err(e.status),
        }
    }
    Ok(None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else { return };
    let pieces: Vec<&[u8]> = input.chunks(usize::from(step.max(1))).collect();
    assert_eq!(body(&[input]), body(&pieces));
});
