//! Log output off the request path: a `tracing` writer that appends each
//! formatted line to a bounded in-memory buffer and lets a background
//! thread write the buffer to stdout in batches. Nothing on the request
//! path ever waits for stdout.
//!
//! Writing every request's log lines straight to stdout costs a system call
//! each on the thread that serves the request, and blocks that thread when
//! stdout is slow or stalled (a pipe nobody reads). Here a request only
//! copies its line into the buffer under a short lock; the flusher thread,
//! woken once when the buffer turns non-empty, waits [`FLUSH_DELAY`] to
//! gather a batch (or less, once [`BATCH`] bytes are waiting), takes the
//! whole buffer and writes it with the lock released.
//!
//! **Bounded, lossy under back-pressure.** At most [`MAX_PENDING`] bytes of
//! lines are held (waiting, plus the batch being written). A line that
//! does not fit is dropped whole and counted
//! ([`lines_dropped`], the metric `token_authority_log_lines_dropped_total`).
//! Once dropping has started, every line is dropped until the flusher has
//! written enough that at most [`RESUME_AT`] bytes are left, so the log has
//! one gap per episode, not a line here and there. Each gap is marked in
//! the log by two WARN lines (target `token_authority::telemetry::logwriter`,
//! in the log's format, never subject to `RUST_LOG`): `stdout cannot keep
//! up: dropping log lines` where the gap starts, and `stdout caught up: log
//! lines are written again` with `dropped=N` where it ends. They reach
//! stdout when stdout takes lines again. Lines lost to a write error (a
//! closed stdout) are counted as dropped too.
//!
//! [`FlushGuard`] writes what is left when it is dropped (at the end of
//! `serve`), waiting at most [`SHUTDOWN_FLUSH`]: a stalled stdout cannot
//! hold the process. A crash may lose the last [`FLUSH_DELAY`] of lines.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the flusher gathers lines before writing them.
pub const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// Lines waiting past this size are written without waiting for
/// [`FLUSH_DELAY`].
pub const BATCH: usize = 256 * 1024;
/// The most bytes of lines held at once (waiting and being written); a
/// line that would exceed it is dropped.
pub const MAX_PENDING: usize = 4 * 1024 * 1024;
/// Dropping stops once at most this many bytes are held.
pub const RESUME_AT: usize = MAX_PENDING / 2;
/// How long [`FlushGuard`] waits for the rest to be written at shutdown.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The target of the writer's own WARN lines.
const TARGET: &str = "token_authority::telemetry::logwriter";
const STARTED: &str = "stdout cannot keep up: dropping log lines \
     (counted in token_authority_log_lines_dropped_total)";
const STOPPED: &str = "stdout caught up: log lines are written again";

/// Lines dropped by every writer of the process.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Main-log lines dropped so far (stdout could not keep up, or failed).
pub fn lines_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[derive(Debug, Default)]
struct State {
    /// Lines waiting for the flusher.
    buf: Vec<u8>,
    /// Bytes of the batch the flusher is writing.
    in_flight: usize,
    /// `Some(n)` while dropping: `n` lines dropped in this episode.
    dropping: Option<u64>,
    /// Shutdown: write without delay and report when done.
    urgent: bool,
}

impl State {
    fn pending(&self) -> usize {
        self.buf.len() + self.in_flight
    }
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes the flusher: lines arrived, or [`BATCH`] bytes, or shutdown.
    wake: Condvar,
    /// Wakes the flush guard: everything was written.
    idle: Condvar,
    /// The log's format (for the writer's own lines).
    json: bool,
    /// Lines dropped by this writer.
    dropped: AtomicU64,
}

impl Inner {
    fn new(json: bool) -> Self {
        Self {
            json,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves at worst a partial line.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count_dropped(&self, lines: u64) {
        self.dropped.fetch_add(lines, Ordering::Relaxed);
        DROPPED.fetch_add(lines, Ordering::Relaxed);
    }

    /// Takes one line: appends it, or drops it when it does not fit.
    fn push(&self, data: &[u8]) {
        let mut s = self.lock();
        if s.dropping.is_some() || s.pending() + data.len() > MAX_PENDING {
            let lines = newlines(data).max(1);
            let episode = match s.dropping {
                Some(n) => n,
                None => {
                    // The gap starts here: marked after the last line kept
                    // (beyond the bound by one short line).
                    let line = warn_line(self.json, STARTED, None);
                    s.buf.extend_from_slice(line.as_bytes());
                    0
                }
            };
            s.dropping = Some(episode + lines);
            drop(s);
            self.count_dropped(lines);
            return;
        }
        let before = s.buf.len();
        s.buf.extend_from_slice(data);
        let after = s.buf.len();
        let idle = s.in_flight == 0;
        drop(s);
        if before < BATCH && after >= BATCH {
            self.wake.notify_one();
            if idle {
                // A batch is ready and the flusher is not writing: let it
                // run now. On a busy CPU it shares with this thread it
                // would otherwise wait until this thread sleeps, while the
                // buffer grows into cold memory and then drops lines. One
                // call per batch; returns at once when another CPU is free.
                std::thread::yield_now();
            }
        } else if before == 0 {
            self.wake.notify_one();
        }
    }

    /// The flusher: waits for lines, writes them in batches, ends gaps.
    fn run(&self) {
        let mut out = Vec::new();
        loop {
            let mut s = self.lock();
            s = self
                .wake
                .wait_while(s, |s| s.buf.is_empty())
                .unwrap_or_else(PoisonError::into_inner);
            if s.buf.len() < BATCH && !s.urgent {
                s = self
                    .wake
                    .wait_timeout_while(s, FLUSH_DELAY, |s| s.buf.len() < BATCH && !s.urgent)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut s.buf, &mut out);
            s.in_flight = out.len();
            drop(s);
            let lost = write_out(&mut std::io::stdout().lock(), &out);
            if lost > 0 {
                self.count_dropped(lost);
            }
            out.clear();
            if out.capacity() > 2 * BATCH {
                out.shrink_to(BATCH);
            }
            self.written();
        }
    }

    /// After a batch was written: ends a gap once enough room is free, and
    /// tells a waiting flush guard when everything is written.
    fn written(&self) {
        let mut s = self.lock();
        s.in_flight = 0;
        if let Some(n) = s.dropping {
            if s.pending() <= RESUME_AT {
                let line = warn_line(self.json, STOPPED, Some(n));
                s.buf.extend_from_slice(line.as_bytes());
                s.dropping = None;
            }
        }
        if s.urgent && s.buf.is_empty() {
            self.idle.notify_all();
        }
    }

    /// Asks the flusher to write everything now and waits for it, at most
    /// `limit`.
    fn flush_within(&self, limit: Duration) {
        let mut s = self.lock();
        s.urgent = true;
        self.wake.notify_all();
        let _ = self
            .idle
            .wait_timeout_while(s, limit, |s| !s.buf.is_empty() || s.in_flight > 0);
    }
}

/// Writes `batch`; returns the number of lines not written (an error).
fn write_out(out: &mut impl Write, batch: &[u8]) -> u64 {
    let mut rest = batch;
    while !rest.is_empty() {
        match out.write(rest) {
            Ok(0) => break,
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if out.flush().is_err() && rest.is_empty() {
        // Whatever the flush did not write is lost; it is not known how
        // much, so the batch's last line is counted.
        return 1;
    }
    newlines(rest)
}

fn newlines(data: &[u8]) -> u64 {
    data.iter().filter(|b| **b == b'\n').count() as u64
}

/// Now, as the line formatter writes it: `2026-11-29T04:35:31.123456Z`.
fn timestamp(out: &mut String) {
    use std::fmt::Write as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let rem = secs % 86_400;
    let (y, m, d) = crate::domain::civil_from_days(secs / 86_400);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    );
}

/// One of the writer's own WARN lines, in the log's format (as
/// [`crate::telemetry::logfmt`] writes them).
fn warn_line(json: bool, message: &str, dropped: Option<u64>) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(256);
    if json {
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line);
        let _ = write!(
            line,
            "\",\"level\":\"WARN\",\"target\":\"{TARGET}\",\"message\":\"{message}\""
        );
        if let Some(n) = dropped {
            let _ = write!(line, ",\"dropped\":{n}");
        }
        line.push_str("}\n");
    } else {
        timestamp(&mut line);
        let _ = write!(line, "  WARN {TARGET}: {message}");
        if let Some(n) = dropped {
            let _ = write!(line, " dropped={n}");
        }
        line.push('\n');
    }
    line
}

/// The batching stdout writer (a [`MakeWriter`] for `tracing-subscriber`).
#[derive(Debug, Clone)]
pub struct BatchedStdout {
    inner: Arc<Inner>,
}

/// Writes the remaining lines when dropped (waiting at most
/// [`SHUTDOWN_FLUSH`]). Keep it alive while logging.
#[derive(Debug)]
#[must_use = "dropping the guard at once flushes at once; keep it for the process's life"]
pub struct FlushGuard {
    inner: Arc<Inner>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.inner.flush_within(SHUTDOWN_FLUSH);
    }
}

impl BatchedStdout {
    /// The writer (its own WARN lines in JSON when `json`), its flush
    /// guard, and the flusher thread (started here; an error when the OS
    /// refuses a thread, as lines would then have to be written on the
    /// request path).
    pub fn new(json: bool) -> std::io::Result<(Self, FlushGuard)> {
        let inner = Arc::new(Inner::new(json));
        let flusher = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("log-flush".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || flusher.run())?;
        let writer = Self {
            inner: Arc::clone(&inner),
        };
        Ok((writer, FlushGuard { inner }))
    }
}

/// One event's writer: appends to the shared buffer.
#[derive(Debug)]
pub struct LineSink<'a> {
    inner: &'a Inner,
}

impl Write for LineSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.inner.push(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineSink { inner: &self.inner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_buffered_in_order() {
        let inner = Inner::new(false);
        let mut sink = LineSink { inner: &inner };
        sink.write_all(b"one\n").unwrap();
        sink.write_all(b"two\n").unwrap();
        assert_eq!(inner.lock().buf.as_slice(), b"one\ntwo\n");
    }

    #[test]
    fn a_full_buffer_drops_whole_lines_between_two_warn_lines() {
        let inner = Inner::new(false);
        let mut sink = LineSink { inner: &inner };
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let fit = MAX_PENDING / line.len();
        for _ in 0..fit + 10 {
            sink.write_all(&line).unwrap();
        }
        assert_eq!(inner.dropped.load(Ordering::Relaxed), 10);
        {
            let s = inner.lock();
            assert_eq!(s.dropping, Some(10));
            let text = String::from_utf8_lossy(&s.buf);
            assert!(
                text.ends_with(&format!("  WARN {TARGET}: {STARTED}\n")),
                "{}",
                &text[text.len() - 200..]
            );
            assert_eq!(text.matches(STARTED).count(), 1);
        }
        // The flusher takes the buffer: while it writes, the bytes still
        // count, so lines are still dropped.
        let batch = std::mem::take(&mut inner.lock().buf);
        inner.lock().in_flight = batch.len();
        sink.write_all(b"dropped\n").unwrap();
        assert_eq!(inner.dropped.load(Ordering::Relaxed), 11);
        // Written: the gap ends with its count, then lines are kept again.
        inner.written();
        sink.write_all(b"kept\n").unwrap();
        let s = inner.lock();
        assert_eq!(s.dropping, None);
        let text = String::from_utf8_lossy(&s.buf);
        assert!(
            text.contains(&format!("  WARN {TARGET}: {STOPPED} dropped=11\nkept\n")),
            "{text}"
        );
    }

    #[test]
    fn warn_lines_are_json_in_the_json_format() {
        let v: serde_json::Value =
            serde_json::from_str(&warn_line(true, STOPPED, Some(7))).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], TARGET);
        assert_eq!(v["message"], STOPPED);
        assert_eq!(v["dropped"], 7);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        let v: serde_json::Value = serde_json::from_str(&warn_line(true, STARTED, None)).unwrap();
        assert_eq!(v["message"], STARTED);
        assert!(v.get("dropped").is_none());
    }

    #[test]
    fn a_failed_write_counts_the_lines_it_lost() {
        struct Half(usize);
        impl Write for Half {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                let n = b.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(write_out(&mut Half(100), b"a\nb\nc\n"), 0);
        assert_eq!(write_out(&mut Half(3), b"a\nb\nc\n"), 2);
        assert_eq!(write_out(&mut Half(0), b"a\nb\nc\n"), 3);
    }

    #[test]
    fn the_guard_waits_a_bounded_time_for_a_stuck_flusher() {
        // No flusher (as if it were stuck in a write): the guard gives up
        // after its limit.
        let inner = Inner::new(false);
        inner.push(b"line\n");
        let start = std::time::Instant::now();
        inner.flush_within(Duration::from_millis(100));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!inner.lock().buf.is_empty());
    }
}
