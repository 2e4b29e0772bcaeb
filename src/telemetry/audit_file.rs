//! The audit file as a device that fails closed (`audit_log`).
//!
//! Audit events are formatted as JSON lines by the audit layer of the log
//! subscriber ([`super::logging`]), whose writer hands each line to
//! [`AuditFile::submit`]: written by the request itself, or, with
//! `audit_fsync`, by a writer thread in batches (see below); each line has
//! a receipt that says whether it was written.
//!
//! * **A token is returned only after its record is written.** The API runs
//!   the synchronous part of a call inside [`collect`], which gathers the
//!   receipts of the records it emits, and awaits them ([`committed`])
//!   before the response leaves; a failed or refused write turns the call
//!   into UNAVAILABLE / 503 and the token is dropped. Written means handed
//!   to the kernel (it survives the process being killed); with
//!   `audit_fsync`, on the disk.
//! * **No partial lines.** The writer remembers the file's length after the
//!   last complete batch; a failed write (ENOSPC, EIO) is cut back to it.
//! * **Health.** After a failure the device is unhealthy: readiness and
//!   gRPC health turn NOT_SERVING, `token_authority_audit_write_failures_total`
//!   counts the failed batches. While unhealthy the writer tries to write a
//!   probe record every second, and issuance resumes by itself when writes
//!   succeed again.
//! * **Rotation.** The writer checks that the path still names the open
//!   file (before every write after a failure, else at most every 200 ms);
//!   after a rename (logrotate) or a removal it opens (creates) the path
//!   again.
//! * **Without `audit_fsync`** a request writes its own line (one `write`
//!   system call under a lock: no hand-over to the writer thread, whose
//!   round trip cost ~40% of the throughput); with it, the writer thread
//!   batches lines for one write and one `fdatasync` (group commit).
//! * **Bounded.** With `audit_fsync`, at most [`MAX_QUEUED`] lines wait for the writer; beyond
//!   that a line's receipt fails at once (fail closed, no unbounded memory).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

/// Most lines waiting for the writer.
pub const MAX_QUEUED: usize = 65_536;
/// Most bytes written in one batch.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// How often an unhealthy writer tries again without new records.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The answers of the records a call emitted: written, or not. Without
/// `audit_fsync` they are known when the record is submitted; with it,
/// each is a channel the writer thread answers after its batch is synced.
#[derive(Debug, Default)]
pub struct Receipts {
    /// Whether any record was submitted.
    any: bool,
    /// Whether a record already known is not written.
    failed: bool,
    /// The answers still to come (with `audit_fsync`).
    waits: Vec<oneshot::Receiver<bool>>,
}

impl Receipts {
    /// Whether no record was submitted.
    pub fn is_empty(&self) -> bool {
        !self.any
    }
}

struct Job {
    line: Vec<u8>,
    done: Option<oneshot::Sender<bool>>,
}

#[derive(Debug)]
struct Shared {
    healthy: AtomicBool,
    failures: AtomicU64,
    records: AtomicU64,
}

/// The audit file device.
#[derive(Debug, Clone)]
pub struct AuditFile {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
    /// Without `audit_fsync`: the writer, used directly by the request
    /// (one `write` of one line, no hand-over to the writer thread).
    direct: Option<Arc<Mutex<Writer>>>,
}

static DEVICE: OnceLock<AuditFile> = OnceLock::new();

thread_local! {
    static PENDING: RefCell<Option<Receipts>> = const { RefCell::new(None) };
}

impl AuditFile {
    /// Opens (creates) `path` for appending and starts the writer thread.
    /// Fails when the file cannot be opened now (a configuration error).
    pub fn open(path: &Path, fsync: bool) -> std::io::Result<Self> {
        let file = Opened::open(path)?;
        let (tx, rx) = mpsc::sync_channel(MAX_QUEUED);
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            failures: AtomicU64::new(0),
            records: AtomicU64::new(0),
        });
        let writer = Arc::new(Mutex::new(Writer {
            path: path.to_path_buf(),
            file: Some(file),
            fsync,
            shared: Arc::clone(&shared),
            checked: None,
        }));
        let thread_writer = Arc::clone(&writer);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || Writer::run(&thread_writer, &rx))?;
        Ok(Self {
            tx,
            shared,
            direct: (!fsync).then_some(writer),
        })
    }

    /// Makes this the process's audit file (the one the audit layer writes
    /// to and health reads). Only the first call takes effect.
    pub fn install(self) -> Self {
        let _ = DEVICE.set(self.clone());
        self
    }

    /// Queues one complete line; its receipt joins the current
    /// [`collect`] scope, if any.
    pub fn submit(&self, line: &[u8]) {
        if let Some(w) = &self.direct {
            // Without fsync a write is a short system call: the request
            // makes it itself, and knows its answer at once (no channel).
            let ok = w.lock().unwrap_or_else(|e| e.into_inner()).write(line);
            if ok {
                self.shared.records.fetch_add(1, Ordering::Relaxed);
            }
            PENDING.with(|p| {
                if let Some(r) = p.borrow_mut().as_mut() {
                    r.any = true;
                    r.failed |= !ok;
                }
            });
            return;
        }
        let done = PENDING.with(|p| {
            p.borrow_mut().as_mut().map(|r| {
                let (done, receipt) = oneshot::channel();
                r.any = true;
                r.waits.push(receipt);
                done
            })
        });
        match self.tx.try_send(Job {
            line: line.to_vec(),
            done,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                // Queue full or writer gone: the record is not written.
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                self.shared.healthy.store(false, Ordering::Release);
                if let Some(d) = job.done {
                    let _ = d.send(false);
                }
            }
        }
    }

    /// Whether the last write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Failed batches (and lines refused because the queue was full).
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Records written.
    pub fn records(&self) -> u64 {
        self.shared.records.load(Ordering::Relaxed)
    }
}

/// The process's audit file, when `audit_log` is configured.
pub fn device() -> Option<&'static AuditFile> {
    DEVICE.get()
}

/// Whether issuance may go on as far as the audit file is concerned: no
/// audit file, or a healthy one.
pub fn healthy() -> bool {
    device().is_none_or(AuditFile::is_healthy)
}

/// Runs `f` (synchronous: it does not yield) and returns what it returned
/// with the receipts of the audit records it emitted.
pub fn collect<T>(f: impl FnOnce() -> T) -> (T, Receipts) {
    if device().is_none() {
        return (f(), Receipts::default());
    }
    struct Reset(Option<Receipts>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            PENDING.with(|p| *p.borrow_mut() = prev);
        }
    }
    let prev = PENDING.with(|p| p.borrow_mut().replace(Receipts::default()));
    let reset = Reset(prev);
    let out = f();
    let receipts = PENDING.with(|p| p.borrow_mut().take()).unwrap_or_default();
    drop(reset);
    (out, receipts)
}

/// Whether every record of `receipts` was written.
pub async fn committed(receipts: Receipts) -> bool {
    let mut all = !receipts.failed;
    for r in receipts.waits {
        all &= r.await.unwrap_or(false);
    }
    all
}

/// The open file, its identity, and the length to cut it back to when a
/// failed write could not be undone at once.
#[derive(Debug)]
struct Opened {
    file: File,
    id: (u64, u64),
    cut_to: Option<u64>,
}

impl Opened {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            id: identity(&meta),
            file,
            cut_to: None,
        })
    }
}

#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    file: Option<Opened>,
    fsync: bool,
    shared: Arc<Shared>,
    /// When the path was last checked to still name the open file.
    checked: Option<std::time::Instant>,
}

/// How often the path is checked to still name the open file (rotation).
const RENAME_CHECK: Duration = Duration::from_millis(200);

impl Writer {
    /// The writer thread: batches of queued lines (with `audit_fsync`),
    /// and, while the file cannot be written, a probe every second.
    fn run(writer: &Mutex<Writer>, rx: &Receiver<Job>) {
        let lock = || writer.lock().unwrap_or_else(|e| e.into_inner());
        let shared = Arc::clone(&lock().shared);
        let mut batch: Vec<Job> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            // Wakes every PROBE_INTERVAL without records: a direct write
            // (without fsync) may have failed meanwhile, and then the
            // probe is this thread's.
            let first = match rx.recv_timeout(PROBE_INTERVAL) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => {
                    if !shared.healthy.load(Ordering::Acquire) {
                        lock().probe();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            buf.clear();
            buf.extend_from_slice(&first.line);
            batch.push(first);
            while buf.len() < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(j) => {
                        buf.extend_from_slice(&j.line);
                        batch.push(j);
                    }
                    Err(_) => break,
                }
            }
            let ok = lock().write(&buf);
            if ok {
                shared
                    .records
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            for j in batch.drain(..) {
                if let Some(d) = j.done {
                    let _ = d.send(ok);
                }
            }
        }
    }

    /// Appends `buf` (complete lines) or nothing; updates health.
    fn write(&mut self, buf: &[u8]) -> bool {
        let result = self.try_write(buf);
        let ok = result.is_ok();
        let was = self.shared.healthy.swap(ok, Ordering::AcqRel);
        match result {
            Ok(()) if !was => tracing::warn!(
                path = %self.path.display(),
                "audit log writable again: issuing tokens"
            ),
            Ok(()) => {}
            Err(e) => {
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                if was {
                    tracing::error!(
                        path = %self.path.display(),
                        error = %e,
                        "audit log write failed: refusing to issue tokens until it can be written"
                    );
                }
            }
        }
        ok
    }

    fn try_write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        // Follow renames and removals (logrotate): the path must name the
        // open file, else open (create) it again. Checked at most every
        // RENAME_CHECK while writes succeed, before every write otherwise.
        let now = std::time::Instant::now();
        let due = !self.shared.healthy.load(Ordering::Acquire)
            || self
                .checked
                .is_none_or(|t| now.saturating_duration_since(t) >= RENAME_CHECK);
        if due || self.file.is_none() {
            let current = std::fs::metadata(&self.path).ok().map(|m| identity(&m));
            if self.file.as_ref().map(|f| Some(f.id)) != Some(current) {
                self.file = Some(Opened::open(&self.path)?);
            }
            self.checked = Some(now);
        }
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("the audit log is not open"));
        };
        // A failed write before left part of a line that could not be cut
        // then: cut it now, before anything follows it.
        if let Some(len) = f.cut_to {
            f.file.set_len(len)?;
            f.cut_to = None;
        }
        // The file is opened for appending, and this writer is its only
        // one: what this call writes is the file's last `written` bytes.
        let mut written = 0;
        let result = loop {
            if written == buf.len() {
                break if self.fsync {
                    f.file.sync_data()
                } else {
                    Ok(())
                };
            }
            match f.file.write(&buf[written..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if result.is_err() && written > 0 {
            // No partial lines: cut what this call wrote (all of it when
            // the sync failed), now or before the next write. The length
            // is read here, not kept, so that a file made shorter from
            // outside (logrotate's copytruncate) is taken as it is.
            // (`fstat` of an open file does not fail in practice; if it
            // did, nothing is cut rather than a guessed length.)
            if let Ok(m) = f.file.metadata() {
                let len = m.len().saturating_sub(written as u64);
                if f.file.set_len(len).is_err() {
                    f.cut_to = Some(len);
                }
            }
        }
        result
    }

    /// While unhealthy: tries to write a probe record.
    fn probe(&mut self) {
        let mut line = String::with_capacity(160);
        line.push_str("{\"timestamp\":\"");
        super::logfmt::push_timestamp(&mut line);
        line.push_str("\",\"level\":\"WARN\",\"target\":\"audit\",\"message\":\"audit log probe: writable again\",\"decision\":\"probe\"}\n");
        self.write(line.as_bytes());
    }
}

/// The audit layer of the log subscriber: each audit event becomes one
/// JSON line ([`super::logfmt::json_line`]), formatted into a buffer of the
/// thread and handed to the device as one record (no copy, no allocation
/// without `audit_fsync`).
#[derive(Debug, Clone)]
pub struct AuditLayer(pub AuditFile);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(1024));
        }
        let write = |line: &mut String| {
            line.clear();
            super::logfmt::json_line(line, event);
            self.0.submit(line.as_bytes());
        };
        LINE.with(|l| match l.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            // Only if formatting this event logged an audit event itself.
            Err(_) => write(&mut String::new()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory (removed when dropped) and the audit file's
    /// path in it.
    fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::Builder::new()
            .prefix(&format!("ta-audit-{name}-"))
            .tempdir()
            .unwrap();
        let path = d.path().join("audit.jsonl");
        (d, path)
    }

    #[tokio::test]
    async fn records_are_written_before_their_receipts_answer_and_follow_renames() {
        let (_dir, path) = tmp("rename");
        let dev = AuditFile::open(&path, false).unwrap();
        // Not installed globally: submit and collect by hand.
        PENDING.with(|p| *p.borrow_mut() = Some(Receipts::default()));
        dev.submit(b"{\"n\":1}\n");
        dev.submit(b"{\"n\":2}\n");
        let receipts = PENDING.with(|p| p.borrow_mut().take()).unwrap();
        assert!(committed(receipts).await);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        // logrotate: rename, then the next record (after the rename check
        // interval) goes to a new file.
        let rotated = path.with_extension("1");
        std::fs::rename(&path, &rotated).unwrap();
        tokio::time::sleep(RENAME_CHECK + Duration::from_millis(50)).await;
        PENDING.with(|p| *p.borrow_mut() = Some(Receipts::default()));
        dev.submit(b"{\"n\":3}\n");
        let receipts = PENDING.with(|p| p.borrow_mut().take()).unwrap();
        assert!(committed(receipts).await);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
        assert_eq!(dev.records(), 3);
        assert!(dev.is_healthy());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_write_leaves_no_partial_line_and_recovers() {
        // /dev/full fails every write with ENOSPC; a directory in the way
        // of the path makes reopening fail.
        let (_dir, path) = tmp("fail");
        let dev = AuditFile::open(&path, true).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        PENDING.with(|p| *p.borrow_mut() = Some(Receipts::default()));
        dev.submit(b"{\"n\":1}\n");
        let receipts = PENDING.with(|p| p.borrow_mut().take()).unwrap();
        assert!(!committed(receipts).await);
        assert!(!dev.is_healthy());
        assert!(dev.failures() >= 1);
        // The path becomes writable again: the probe (or the next record)
        // makes the device healthy without anyone's help.
        std::fs::remove_dir(&path).unwrap();
        let mut healthy = false;
        for _ in 0..50 {
            if dev.is_healthy() {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(healthy);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n') && text.contains("probe"), "{text}");
    }
}
