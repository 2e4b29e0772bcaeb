//! Log output off the request path: a `tracing` writer that appends each
//! formatted line to an in-memory buffer and lets a background thread
//! write the buffer to stdout in batches.
//!
//! Writing every request's log lines straight to stdout costs a system call
//! each (two lines per token request: the request and the `token issued`
//! audit event) on the thread that serves the request. Here a request only
//! copies its lines into the buffer; the flusher thread, woken once when
//! the buffer turns non-empty, waits [`FLUSH_DELAY`] to gather a batch and
//! writes it with one call. A buffer past [`MAX_BUFFER`] is written at once
//! by the thread that filled it (back-pressure: lines are never dropped).
//! [`FlushGuard`] writes what is left when it is dropped (at the end of
//! `serve`), so a clean shutdown loses nothing; a crash may lose the last
//! [`FLUSH_DELAY`] of lines.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the flusher gathers lines before writing them.
pub const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// A buffer this large is written at once by the thread that filled it.
pub const MAX_BUFFER: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Inner {
    buf: Mutex<Vec<u8>>,
    nonempty: Condvar,
    write_through: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves at worst a partial line.
        self.buf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_out(buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        // Logging must never fail a request: a closed stdout drops lines.
        let _ = out.write_all(buf);
        let _ = out.flush();
        buf.clear();
        if buf.capacity() > MAX_BUFFER * 2 {
            buf.shrink_to(MAX_BUFFER);
        }
    }

    fn flush(&self) {
        Self::write_out(&mut self.lock());
    }
}

/// The batching stdout writer (a [`MakeWriter`] for `tracing-subscriber`).
#[derive(Debug, Clone)]
pub struct BatchedStdout {
    inner: Arc<Inner>,
}

/// Writes the remaining lines when dropped. Keep it alive while logging.
#[derive(Debug)]
#[must_use = "dropping the guard at once flushes at once; keep it for the process's life"]
pub struct FlushGuard {
    inner: Arc<Inner>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.inner.flush();
    }
}

impl BatchedStdout {
    /// The writer, its flush guard, and the flusher thread (started here).
    /// Without a thread (the OS refused one), every line is written at once.
    pub fn new() -> (Self, FlushGuard) {
        let inner = Arc::new(Inner::default());
        let flusher = Arc::clone(&inner);
        let started = std::thread::Builder::new()
            .name("log-flush".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || {
                loop {
                    {
                        let guard = flusher.lock();
                        let guard = flusher
                            .nonempty
                            .wait_while(guard, |b| b.is_empty())
                            .unwrap_or_else(PoisonError::into_inner);
                        drop(guard);
                    }
                    std::thread::sleep(FLUSH_DELAY);
                    flusher.flush();
                }
            })
            .is_ok();
        if !started {
            // No flusher: every line is written at once.
            inner.write_through.store(true, Ordering::Relaxed);
        }
        let writer = Self {
            inner: Arc::clone(&inner),
        };
        (writer, FlushGuard { inner })
    }
}

/// One event's writer: appends to the shared buffer.
#[derive(Debug)]
pub struct LineSink<'a> {
    inner: &'a Inner,
}

impl Write for LineSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut buf = self.inner.lock();
        let was_empty = buf.is_empty();
        buf.extend_from_slice(data);
        if buf.len() >= MAX_BUFFER || self.inner.write_through.load(Ordering::Relaxed) {
            Inner::write_out(&mut buf);
        } else if was_empty {
            self.inner.nonempty.notify_one();
        }
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
    fn lines_are_buffered_in_order_and_flushed() {
        let inner = Inner::default();
        let mut sink = LineSink { inner: &inner };
        sink.write_all(b"one\n").unwrap();
        sink.write_all(b"two\n").unwrap();
        assert_eq!(inner.lock().as_slice(), b"one\ntwo\n");
        inner.flush();
        assert!(inner.lock().is_empty());
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let inner = Inner::default();
        let mut sink = LineSink { inner: &inner };
        let line = vec![b' '; MAX_BUFFER];
        sink.write_all(&line).unwrap();
        assert!(inner.lock().is_empty());
    }
}
