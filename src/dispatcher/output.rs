//! A worker's captured stdout and stderr: logged line by line under the worker's name,
//! never interleaved mid-line, and never allowed to hold the loop.
//!
//! Each read of a pipe has a per-turn byte budget, and each worker a rate
//! (`max_output_rate`, with one second's worth of burst): what comes faster is read and
//! dropped, counted, and reported in one line at most every `REPORT_EVERY`. A worker
//! printing in a tight loop (`yes`) then costs the dispatcher one bounded read per turn.
//!
//! Lines a worker prints before its HELLO are held (up to `MAX_HELD`) instead of logged:
//! if the worker dies before it is ready, they are its last words (an import traceback),
//! logged once in full; the same words from the next attempt are one line.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::unix::pipe::Receiver;

/// Bytes read from one output pipe per turn.
pub const TURN_BUDGET: usize = 64 * 1024;
/// Longest captured line; longer ones are split.
const MAX_LINE: usize = 16 * 1024;
/// Most bytes of a starting worker's output held back for its death report.
const MAX_HELD: usize = 16 * 1024;
/// The least a logged line costs against the rate, in bytes (see `Capture::charge`).
const MIN_LINE_COST: usize = 256;
/// Over its rate, a worker's output is read (and dropped) at most once this often.
const THROTTLE: Duration = Duration::from_millis(50);
/// Dropped-output reports come at most this often per worker.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Which pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Stdout,
    Stderr,
}

/// One captured pipe and its partial line.
#[derive(Debug)]
pub struct OutputPipe {
    pub rx: Receiver,
    partial: Vec<u8>,
}

impl OutputPipe {
    pub fn new(rx: Receiver) -> OutputPipe {
        OutputPipe { rx, partial: Vec::new() }
    }
}

/// What one read turn found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The pipe is empty for now.
    Drained,
    /// The budget ran out with bytes left: read again next turn.
    More,
    /// The worker closed it.
    Eof,
}

/// Where a worker's output goes: the log, or (before HELLO) a held buffer.
#[derive(Debug)]
pub struct Capture {
    /// `pool/slot`.
    pub name: String,
    pub pid: i32,
    /// Token bucket in bytes: refilled at `rate` a second, up to `rate`.
    tokens: f64,
    rate: f64,
    refilled: Instant,
    dropped: u64,
    dropped_total: u64,
    reported: Instant,
    /// Output of a worker not yet ready, for its death report.
    held: Option<Vec<(Which, String)>>,
    held_bytes: usize,
    /// When a read last dropped output (reads are then spaced `THROTTLE` apart).
    over_rate_read: Option<Instant>,
}

impl Capture {
    pub fn new(name: String, pid: i32, rate: u64, now: Instant) -> Capture {
        let rate = rate.max(1) as f64;
        Capture {
            name,
            pid,
            tokens: rate,
            rate,
            refilled: now,
            dropped: 0,
            dropped_total: 0,
            reported: now,
            held: Some(Vec::new()),
            held_bytes: 0,
            over_rate_read: None,
        }
    }

    /// Read one turn's worth from `pipe`.
    pub fn read(&mut self, pipe: &mut OutputPipe, which: Which, scratch: &mut [u8], now: Instant) -> Turn {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst());
        self.refilled = now;
        let mut budget = TURN_BUDGET;
        let chunk = scratch.len().min(TURN_BUDGET);
        while budget > 0 {
            let want = chunk.min(budget);
            match pipe.rx.read(&mut scratch[..want]) {
                Ok(0) => {
                    self.flush_partial(pipe, which);
                    return Turn::Eof;
                }
                Ok(n) => {
                    budget -= n;
                    let dropped_before = self.dropped_total;
                    self.take(pipe, which, &scratch[..n]);
                    if self.dropped_total > dropped_before {
                        self.over_rate_read = Some(now);
                    }
                    if n < want {
                        return Turn::Drained;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Turn::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.flush_partial(pipe, which);
                    return Turn::Eof;
                }
            }
        }
        Turn::More
    }

    /// `Some(time)`: the worker went over its rate less than `THROTTLE` ago; read again
    /// at that time (a flood is then read, and dropped, one turn per `THROTTLE`).
    pub fn throttled_until(&mut self, now: Instant) -> Option<Instant> {
        match self.over_rate_read {
            Some(t) if now < t + THROTTLE => Some(t + THROTTLE),
            _ => None,
        }
    }

    /// The bucket's size: a second's worth, and at least one longest line.
    fn burst(&self) -> f64 {
        self.rate.max(MAX_LINE as f64)
    }

    /// The rate-limited report of dropped output, if one is due (or `force`d at exit).
    pub fn report_dropped(&mut self, now: Instant, force: bool) {
        if self.dropped == 0 || (!force && now.saturating_duration_since(self.reported) < REPORT_EVERY) {
            return;
        }
        warn!(
            "worker {} (pid {}) wrote output faster than max_output_rate ({}/s): {} dropped in {:.0?} ({} in all)",
            self.name,
            self.pid,
            human_bytes(self.rate as u64),
            human_bytes(self.dropped),
            now.saturating_duration_since(self.reported),
            human_bytes(self.dropped_total)
        );
        self.dropped = 0;
        self.reported = now;
    }

    fn take(&mut self, pipe: &mut OutputPipe, which: Which, bytes: &[u8]) {
        pipe.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = pipe.partial[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            // Charged before the line is built: a dropped line costs a scan, nothing more.
            if self.charge(pos + 1) {
                let line = String::from_utf8_lossy(&pipe.partial[start..end]).trim_end_matches('\r').to_string();
                self.line(which, line);
            }
            start = end + 1;
        }
        pipe.partial.drain(..start);
        if pipe.partial.len() > MAX_LINE {
            let cut = std::mem::take(&mut pipe.partial);
            if self.charge(cut.len()) {
                self.line(which, String::from_utf8_lossy(&cut).into_owned());
            }
        }
    }

    /// Take a line of `len` bytes from the bucket; `false`: over the rate, dropped and
    /// counted. Each line costs at least `MIN_LINE_COST`: logging a line has a price of
    /// its own, so a flood of tiny lines (`yes`) is bounded in lines, not only in bytes.
    fn charge(&mut self, len: usize) -> bool {
        let cost = len.max(MIN_LINE_COST) as f64;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            self.tokens = self.tokens.min(0.0);
            self.dropped += len as u64;
            self.dropped_total += len as u64;
            false
        }
    }

    fn flush_partial(&mut self, pipe: &mut OutputPipe, which: Which) {
        if !pipe.partial.is_empty() {
            let rest = std::mem::take(&mut pipe.partial);
            if self.charge(rest.len()) {
                self.line(which, String::from_utf8_lossy(&rest).into_owned());
            }
        }
    }

    fn line(&mut self, which: Which, line: String) {
        if let Some(held) = self.held.as_mut()
            && self.held_bytes + line.len() <= MAX_HELD
        {
            self.held_bytes += line.len();
            held.push((which, line));
            return;
        }
        log_line(&self.name, self.pid, which, &line);
    }

    /// The worker said HELLO: what it printed while starting is ordinary output now.
    pub fn ready(&mut self) {
        if let Some(held) = self.held.take() {
            for (which, line) in held {
                log_line(&self.name, self.pid, which, &line);
            }
        }
    }

    /// The worker died before HELLO: its held output, for the death report.
    pub fn last_words(&mut self) -> Vec<(Which, String)> {
        self.held.take().unwrap_or_default()
    }
}

/// Read up to `turns` budgeted turns from `pipe` (a dying worker's last words, a
/// fork-server's import-time output); at EOF the pipe is deregistered and dropped.
pub fn read_turns(
    capture: &mut Capture,
    pipe: &mut Option<OutputPipe>,
    which: Which,
    scratch: &mut [u8],
    registry: &mio::Registry,
    now: Instant,
    turns: usize,
) {
    for _ in 0..turns {
        let Some(out) = pipe.as_mut() else { return };
        match capture.read(out, which, scratch, now) {
            Turn::More => continue,
            Turn::Drained => return,
            Turn::Eof => {
                if let Some(mut o) = pipe.take() {
                    let _ = registry.deregister(&mut o.rx);
                }
                return;
            }
        }
    }
}

pub fn log_line(name: &str, pid: i32, which: Which, line: &str) {
    match which {
        Which::Stderr => warn!(target: "worker", "[{name} pid={pid} stderr] {line}"),
        Which::Stdout => info!(target: "worker", "[{name} pid={pid} stdout] {line}"),
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
