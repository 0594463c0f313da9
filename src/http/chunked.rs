//! Incremental decoder for `Transfer-Encoding: chunked` request bodies.
//!
//! Fed whatever bytes are buffered, it consumes as much as it can and remembers where it
//! stopped, so each byte is looked at once however small the reads are. Framing is strict
//! (CRLF only, hex sizes of at most 16 digits): lenient chunk parsing is a classic request
//! smuggling vector when a proxy in front parses differently.

use super::errors::HttpError;

/// Longest chunk-size accepted, in hex digits (fits a u64).
const MAX_SIZE_DIGITS: u8 = 16;
/// Longest chunk extension accepted per chunk line; extensions are ignored anyway.
const MAX_EXTENSION_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// After the size: optional whitespace then `;ext` or CR.
    SizeTail,
    /// Inside a chunk extension, skipping to CR.
    Extension,
    /// Saw CR after the size line, LF must follow.
    SizeLf,
    /// Copying chunk data.
    Data,
    /// After chunk data: CR must follow.
    DataCr,
    /// After chunk data: LF must follow.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line, skipping to CR.
    TrailerLine,
    /// Saw CR at the start of a trailer line: LF ends the body.
    EndLf,
    /// Saw CR inside a trailer line, LF must follow.
    TrailerLf,
    /// The last chunk and trailers are consumed.
    Done,
}

/// Result of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes of the input consumed (framing and data).
    pub consumed: usize,
    /// The body is complete; bytes after `consumed` belong to the next request.
    pub done: bool,
}

/// Chunked body decoder; one per request body.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// Current chunk size while reading digits, then data bytes left in the chunk.
    remaining: u64,
    digits: u8,
    extension_bytes: usize,
    trailer_bytes: usize,
    /// Sum of declared chunk sizes so far.
    declared: u64,
    max_body: u64,
    max_trailer: usize,
}

impl ChunkedDecoder {
    pub(crate) fn new(max_body: u64, max_trailer: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            digits: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
            declared: 0,
            max_body,
            max_trailer,
        }
    }

    /// Decode from `input`, appending chunk data to `body`.
    pub(crate) fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Progress, HttpError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if self.state == State::Data {
                // Bulk copy: the only state that can see many bytes at once.
                let take = (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[i..i + take]);
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.step(b)?;
        }
        Ok(Progress { consumed: i, done: self.state == State::Done })
    }

    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        const BAD_SIZE: HttpError = HttpError::bad_request("malformed chunk size");
        const BAD_FRAMING: HttpError = HttpError::bad_request("malformed chunked framing");
        match self.state {
            State::Size => match super::hex_digit(b) {
                Some(v) => {
                    if self.digits == MAX_SIZE_DIGITS {
                        return Err(BAD_SIZE);
                    }
                    self.digits += 1;
                    self.remaining = (self.remaining << 4) | u64::from(v);
                }
                None if self.digits == 0 => return Err(BAD_SIZE),
                None => {
                    self.state = State::SizeTail;
                    return self.step(b);
                }
            },
            State::SizeTail => match b {
                b' ' | b'\t' => {}
                b';' => {
                    self.extension_bytes = 0;
                    self.state = State::Extension;
                }
                b'\r' => self.state = State::SizeLf,
                _ => return Err(BAD_SIZE),
            },
            State::Extension => match b {
                b'\r' => self.state = State::SizeLf,
                b'\n' | 0 => return Err(BAD_FRAMING),
                _ => {
                    self.extension_bytes += 1;
                    if self.extension_bytes > MAX_EXTENSION_BYTES {
                        return Err(HttpError::bad_request("chunk extension too long"));
                    }
                }
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(BAD_FRAMING);
                }
                self.end_size_line()?;
            }
            // `decode` copies data in bulk and never steps a byte in this state; were it
            // to, refusing the body beats a panic on client input.
            State::Data => return Err(BAD_FRAMING),
            State::DataCr => {
                if b != b'\r' {
                    return Err(BAD_FRAMING);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(BAD_FRAMING);
                }
                self.state = State::Size;
                self.remaining = 0;
                self.digits = 0;
            }
            State::TrailerStart => {
                self.count_trailer()?;
                match b {
                    b'\r' => self.state = State::EndLf,
                    b'\n' | 0 => return Err(BAD_FRAMING),
                    _ => self.state = State::TrailerLine,
                }
            }
            State::TrailerLine => {
                self.count_trailer()?;
                match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' | 0 => return Err(BAD_FRAMING),
                    _ => {}
                }
            }
            State::TrailerLf => {
                self.count_trailer()?;
                if b != b'\n' {
                    return Err(BAD_FRAMING);
                }
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(BAD_FRAMING);
                }
                self.state = State::Done;
            }
            State::Done => {}
        }
        Ok(())
    }

    /// A size line ended: start the data, or the trailer section for the last chunk.
    fn end_size_line(&mut self) -> Result<(), HttpError> {
        if self.remaining == 0 {
            self.state = State::TrailerStart;
            return Ok(());
        }
        self.declared = self.declared.saturating_add(self.remaining);
        // Refuse on the declared size, before receiving data we would throw away.
        if self.declared > self.max_body {
            return Err(HttpError::new(413, "request body too large"));
        }
        self.state = State::Data;
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer {
            return Err(HttpError::new(431, "chunked trailers too large"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` whole and byte by byte; both must agree.
    fn decode_all(input: &[u8], max_body: u64) -> Result<(Vec<u8>, usize), HttpError> {
        let mut whole = Vec::new();
        let mut dec = ChunkedDecoder::new(max_body, 1024);
        let p = dec.decode(input, &mut whole)?;
        let whole_res = if p.done { Some(p.consumed) } else { None };

        let mut bytewise = Vec::new();
        let mut dec = ChunkedDecoder::new(max_body, 1024);
        let mut consumed = 0;
        let mut done = None;
        for (idx, b) in input.iter().enumerate() {
            let p = dec.decode(std::slice::from_ref(b), &mut bytewise)?;
            consumed += p.consumed;
            if p.done {
                done = Some(idx + 1);
                break;
            }
        }
        assert_eq!(whole, bytewise, "whole vs bytewise body");
        assert_eq!(whole_res, done, "whole vs bytewise completion");
        match whole_res {
            Some(n) => {
                assert_eq!(n, consumed);
                Ok((whole, n))
            }
            None => Err(HttpError::new(0, "incomplete")),
        }
    }

    macro_rules! chunked {
        ($name:ident, $input:expr, Ok($body:expr, $consumed:expr)) => {
            #[test]
            fn $name() {
                let (body, consumed) = decode_all($input, 1 << 20).expect("should decode");
                assert_eq!(body, $body.to_vec());
                assert_eq!(consumed, $consumed);
            }
        };
        ($name:ident, $input:expr, Err($status:expr)) => {
            #[test]
            fn $name() {
                let err = decode_all($input, 1 << 20).expect_err("should fail");
                assert_eq!(err.status, $status, "{err:?}");
            }
        };
    }

    chunked!(simple, b"5\r\nhello\r\n0\r\n\r\n", Ok(b"hello", 15));
    chunked!(two_chunks, b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\nNEXT", Ok(b"abc0123456789", 28));
    chunked!(upper_hex, b"B\r\nhello world\r\n0\r\n\r\n", Ok(b"hello world", 21));
    chunked!(empty_body, b"0\r\n\r\n", Ok(b"", 5));
    chunked!(extension_ignored, b"5;name=val\r\nhello\r\n0;x\r\n\r\n", Ok(b"hello", 26));
    chunked!(bws_before_extension, b"5 ;a=b\r\nhello\r\n0\r\n\r\n", Ok(b"hello", 20));
    chunked!(trailers_discarded, b"1\r\nx\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n", Ok(b"x", 27));
    chunked!(leading_zeros, b"0005\r\nhello\r\n0\r\n\r\n", Ok(b"hello", 18));
    chunked!(incomplete_is_not_done, b"5\r\nhel", Err(0));
    chunked!(non_hex_size, b"g\r\n", Err(400));
    chunked!(empty_size, b"\r\n", Err(400));
    chunked!(negative_size, b"-1\r\n", Err(400));
    chunked!(hex_prefix, b"0x5\r\nhello\r\n0\r\n\r\n", Err(400));
    chunked!(size_too_long, b"00000000000000001\r\n", Err(400));
    chunked!(bare_lf_after_size, b"5\nhello\r\n0\r\n\r\n", Err(400));
    chunked!(cr_without_lf, b"5\rhello", Err(400));
    chunked!(data_not_followed_by_crlf, b"5\r\nhelloX\r\n0\r\n\r\n", Err(400));
    chunked!(data_longer_than_size, b"3\r\nhello\r\n0\r\n\r\n", Err(400));
    chunked!(bare_lf_final, b"0\r\n\n", Err(400));
    chunked!(space_inside_size, b"5 5\r\n", Err(400));
    chunked!(bare_lf_in_trailer, b"0\r\nX: 1\n\r\n", Err(400));

    #[test]
    fn largest_size_hits_body_limit_not_overflow() {
        // 16 hex digits always fit a u64; the body limit is what refuses them.
        let err = decode_all(b"ffffffffffffffff\r\n", 1 << 20).expect_err("too big");
        assert_eq!(err.status, 413);
    }

    #[test]
    fn declared_size_over_limit_is_413_before_data() {
        let mut dec = ChunkedDecoder::new(10, 1024);
        let mut body = Vec::new();
        let err = dec.decode(b"5\r\nhello\r\n6\r\n", &mut body).expect_err("over limit");
        assert_eq!(err.status, 413);
        assert_eq!(body, b"hello");
    }

    #[test]
    fn trailer_section_is_bounded() {
        let mut dec = ChunkedDecoder::new(10, 8);
        let mut body = Vec::new();
        let err = dec.decode(b"0\r\nX-Long: 123456789\r\n\r\n", &mut body).expect_err("trailer cap");
        assert_eq!(err.status, 431);
    }

    #[test]
    fn stops_exactly_at_end() {
        let mut dec = ChunkedDecoder::new(100, 100);
        let mut body = Vec::new();
        let p = dec.decode(b"2\r\nok\r\n0\r\n\r\nGET / HTTP/1.1\r\n", &mut body).expect("ok");
        assert_eq!(p, Progress { consumed: 12, done: true });
    }
}
