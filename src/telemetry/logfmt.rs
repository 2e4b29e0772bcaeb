//! The log line format: text or JSON, one line per `tracing` event, written
//! by a purpose-built formatter, and the request context every line logged
//! while serving a request carries.
//!
//! `tracing-subscriber`'s own formatters are general: every field goes
//! through `fmt::Debug` (strings are escaped character by character) and a
//! request span formats its fields into a heap string when it is created.
//! A token request logs one audit event with a dozen fields, so that cost
//! was a large part of a request's CPU time. This formatter writes the same
//! information directly: numbers and strings without `Debug`, strings
//! escaped a run at a time, the timestamp from integer arithmetic. Instead
//! of a span per request, [`scope`] puts the request id and peer address in
//! a task-local that the formatter reads, so every line logged while the
//! request is served carries them, and a request that logs nothing costs
//! nothing.
//!
//! Text: `2026-11-29T04:35:31.123456Z  INFO audit: token issued
//! decision="issued" caller="app-backend" ... request_id=9f3c.. peer=10.0.0.7:51000`.
//! Strings are quoted and escaped (`\"`, `\\`, `\n`, `\u{1b}`...), so a
//! caller's input cannot forge a line or a field; numbers, booleans and
//! plain `%`-displayed words are written bare.
//!
//! JSON: one object per line: `timestamp`, `level`, `target`, `message`,
//! the event's fields, `request_id` and `peer`, and `span` (the innermost
//! span's name and fields) when the event is inside one.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// What every log line of a request carries.
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// The request id (also in the `x-request-id` response header).
    id: [u8; MAX_ID],
    id_len: u8,
    /// The client's address.
    peer: Option<SocketAddr>,
}

/// Longest request id kept (the server accepts callers' ids up to 64
/// characters).
const MAX_ID: usize = 64;

impl RequestLog {
    /// The context of a request with this id (printable ASCII; longer ids
    /// are cut at [`MAX_ID`] bytes) and peer. Copied inline: no allocation.
    pub fn new(id: &[u8], peer: Option<SocketAddr>) -> Self {
        let mut buf = [0u8; MAX_ID];
        let n = id.len().min(MAX_ID);
        buf[..n].copy_from_slice(&id[..n]);
        Self {
            id: buf,
            // n <= 64 fits a u8.
            id_len: n as u8,
            peer,
        }
    }

    /// The request id.
    pub fn id(&self) -> &str {
        let id = &self.id[..usize::from(self.id_len)];
        // Ids are header values the server checked to be plain ASCII.
        std::str::from_utf8(id).unwrap_or("-")
    }
}

tokio::task_local! {
    static REQUEST: RequestLog;
}

/// Runs `f` with `request` as the context of the lines it logs.
pub async fn scope<F: Future>(request: RequestLog, f: F) -> F::Output {
    REQUEST.scope(request, f).await
}

/// The line format of the main log and of the audit file.
#[derive(Debug, Clone, Copy)]
pub struct LineFormat {
    json: bool,
}

impl LineFormat {
    /// Text lines.
    pub fn text() -> Self {
        Self { json: false }
    }

    /// JSON lines.
    pub fn json() -> Self {
        Self { json: true }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Built in a local buffer and written with one call.
        let mut line = String::with_capacity(384);
        // Events from the `log` crate (rustls' alerts) carry their real
        // target and level in `log.*` fields: use those.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let span = ctx.lookup_current();
        if self.json {
            json_fields(&mut line, meta, event);
            if let Some(span) = &span {
                line.push_str(",\"span\":{\"name\":");
                json_str(&mut line, span.name());
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    // JSON field formatters give `{...}`: splice the members.
                    let inner = fields
                        .fields
                        .strip_prefix('{')
                        .and_then(|f| f.strip_suffix('}'))
                        .unwrap_or("");
                    if !inner.is_empty() {
                        line.push(',');
                        line.push_str(inner);
                    }
                }
                line.push('}');
            }
            line.push_str("}\n");
        } else {
            timestamp(&mut line, now.as_secs(), now.subsec_micros());
            // Right-aligned to five characters, like tracing's own format.
            let level = meta.level().as_str();
            for _ in level.len()..6 {
                line.push(' ');
            }
            line.push_str(level);
            line.push(' ');
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    line.push_str(span.name());
                    let ext = span.extensions();
                    if let Some(fields) = ext.get::<FormattedFields<N>>() {
                        if !fields.fields.is_empty() {
                            line.push('{');
                            line.push_str(&fields.fields);
                            line.push('}');
                        }
                    }
                    line.push_str(": ");
                }
            }
            line.push_str(meta.target());
            line.push(':');
            let mut v = Fields {
                out: &mut line,
                json: false,
            };
            event.record(&mut v);
            let _ = REQUEST.try_with(|r| {
                line.push_str(" request_id=");
                line.push_str(r.id());
                if let Some(p) = r.peer {
                    let _ = write!(line, " peer={p}");
                }
            });
            line.push('\n');
        }
        writer.write_str(&line)
    }
}

/// One event as a complete JSON line (no span: the audit file's records,
/// which are never logged inside one).
pub(crate) fn json_line(line: &mut String, event: &Event<'_>) {
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    json_fields(line, meta, event);
    line.push_str("}\n");
}

/// A JSON line up to its span: `{"timestamp":..,"level":..,"target":..,`
/// the event's fields, `request_id` and `peer` (the object left open).
fn json_fields(line: &mut String, meta: &tracing::Metadata<'_>, event: &Event<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    line.push_str("{\"timestamp\":\"");
    timestamp(line, now.as_secs(), now.subsec_micros());
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push_str("\",\"target\":");
    json_str(line, meta.target());
    let mut v = Fields {
        out: line,
        json: true,
    };
    event.record(&mut v);
    let _ = REQUEST.try_with(|r| {
        line.push_str(",\"request_id\":");
        json_str(line, r.id());
        if let Some(p) = r.peer {
            line.push_str(",\"peer\":\"");
            let _ = write!(line, "{p}");
            line.push('"');
        }
    });
}

/// The current time as [`timestamp`] writes it.
pub(crate) fn push_timestamp(out: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    timestamp(out, now.as_secs(), now.subsec_micros());
}

/// RFC 3339 UTC with microseconds: `2026-11-29T04:35:31.123456Z`.
fn timestamp(out: &mut String, secs: u64, micros: u32) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = crate::domain::civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 6, u64::from(micros));
    // Invariant: only ASCII digits were written into an ASCII template.
    out.push_str(std::str::from_utf8(&b).unwrap_or("0000-00-00T00:00:00.000000Z"));
}

/// Is `c` a character a log line must not carry as is: a control
/// character, or one that Rust's `Debug` escapes (line and paragraph
/// separators, bidirectional overrides, zero-width and other invisible
/// format characters), which could hide or reorder what a viewer shows.
fn invisible(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_control()
    } else {
        c.is_control() || c.escape_debug().len() > 1
    }
}

/// Whether `s` is printable ASCII without `"` or `\\`: written as it is,
/// in text and JSON alike. (A fold without early exit: the compiler makes
/// it a vector loop; these strings are short and nearly always plain.)
fn verbatim(s: &str) -> bool {
    s.bytes().fold(true, |ok, b| {
        ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    })
}

/// A string as a JSON string literal (RFC 8259), with the characters of
/// [`invisible`] as `\uXXXX` escapes.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    if verbatim(s) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: &str = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if invisible(c) => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push_str(esc);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends `s` with the characters `escape` selects written as Rust's
/// `Debug` writes them (`\"`, `\\`, `\n`, `\u{202e}`...).
fn escaped(out: &mut String, s: &str, escape: impl Fn(char) -> bool) {
    if verbatim(s) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if escape(c) {
            out.push_str(&s[start..i]);
            out.extend(c.escape_debug());
            start = i + c.len_utf8();
        }
    }
    out.push_str(&s[start..]);
}

/// A string as a quoted text value, escaped like Rust's `Debug`: quotes,
/// backslashes and the characters of [`invisible`].
fn text_str(out: &mut String, s: &str) {
    out.push('"');
    escaped(out, s, |c| c == '"' || c == '\\' || invisible(c));
    out.push('"');
}

/// A message, bare, with the characters of [`invisible`] escaped (a
/// message that carries a newline must not start a new line).
fn message(out: &mut String, s: &str) {
    escaped(out, s, invisible);
}

/// The `log.target`, `log.module_path`, `log.file` and `log.line` fields
/// of events from the `log` crate (already in the normalized metadata).
fn is_log_field(field: &Field) -> bool {
    field.name().starts_with("log.")
}

/// A `%`-displayed value is written bare when it is a plain word (digits,
/// letters, `.:_-/,@+`), else quoted.
fn is_plain(s: &str) -> bool {
    !s.is_empty() && s.bytes().fold(true, |ok, c| ok & PLAIN[usize::from(c)])
}

/// The bytes of [`is_plain`] words.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'.' | b':' | b'_' | b'-' | b'/' | b',' | b'@' | b'+' | b'[' | b']'
            );
        c += 1;
    }
    t
};

/// Writes an event's fields in the line's format: ` key=value` (text) or
/// `,"key":value` (JSON); the message, in text, bare after the target.
struct Fields<'a> {
    out: &'a mut String,
    json: bool,
}

impl Fields<'_> {
    /// Writes the field's key; false for the fields that are not written
    /// (the `log.*` fields of events from the `log` crate).
    fn key(&mut self, field: &Field) -> bool {
        if is_log_field(field) {
            return false;
        }
        if self.json {
            self.out.push(',');
            json_str(self.out, field.name());
            self.out.push(':');
        } else {
            self.out.push(' ');
            self.out.push_str(field.name());
            self.out.push('=');
        }
        true
    }

    /// Is this the text format's message (written bare, keyless)?
    fn text_message(&mut self, field: &Field) -> bool {
        let is = !self.json && field.name() == "message";
        if is {
            self.out.push(' ');
        }
        is
    }

    fn number(&mut self, field: &Field, value: impl fmt::Display) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }

    fn integer(&mut self, field: &Field, value: impl itoa::Integer) {
        if self.key(field) {
            self.out.push_str(itoa::Buffer::new().format(value));
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.text_message(field) {
            message(self.out, value);
        } else if self.key(field) {
            if self.json {
                json_str(self.out, value);
            } else {
                text_str(self.out, value);
            }
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.json && !value.is_finite() {
            if self.key(field) {
                self.out.push_str("null");
            }
        } else {
            self.number(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text_message = self.text_message(field);
        if !text_message && !self.key(field) {
            return;
        }
        // Written in place, then escaped only when it needs to be: a text
        // message for invisible characters, a text value unless it is a
        // plain word, a JSON value for anything JSON must escape.
        let at = self.out.len();
        let _ = write!(self.out, "{value:?}");
        let written = &self.out[at..];
        if text_message {
            if written.contains(invisible) {
                let m = self.out.split_off(at);
                message(self.out, &m);
            }
        } else if !self.json {
            if !is_plain(written) {
                let v = self.out.split_off(at);
                text_str(self.out, &v);
            }
        } else if !verbatim(written)
            && written
                .chars()
                .any(|c| c == '"' || c == '\\' || invisible(c))
        {
            let v = self.out.split_off(at);
            json_str(self.out, &v);
        } else {
            self.out.insert(at, '"');
            self.out.push('"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut s = String::new();
        timestamp(&mut s, 0, 0);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
        s.clear();
        // 2026-11-29T04:35:31Z
        timestamp(&mut s, 1_795_926_931, 42);
        assert_eq!(s, "2026-11-29T04:35:31.000042Z");
        s.clear();
        // A leap day.
        timestamp(&mut s, 951_782_400, 999_999);
        assert_eq!(s, "2000-02-29T00:00:00.999999Z");
    }

    /// Formats one event with `format` through a real subscriber.
    fn line_of(format: LineFormat, emit: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt as _;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(format)
                .with_writer(move || buf.clone()),
        );
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_are_valid_json_for_any_field() {
        let line = line_of(LineFormat::json(), || {
            tracing::info!(
                target: "t",
                nan = f64::NAN,
                ratio = 0.5,
                n = 7u64,
                neg = -3i64,
                ok = true,
                quoted = ?"a\"b\nc",
                plain = %"word",
                text = "x\u{2028}y",
                "message with \"quotes\""
            );
        });
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["target"], "t");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "message with \"quotes\"");
        assert!(v["nan"].is_null());
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["n"], 7);
        assert_eq!(v["neg"], -3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["quoted"], "\"a\\\"b\\nc\"");
        assert_eq!(v["plain"], "word");
        assert_eq!(v["text"], "x\u{2028}y");
        assert!(v.get("request_id").is_none(), "outside a request");

        let text = line_of(LineFormat::text(), || {
            tracing::warn!(target: "t", n = 7u64, plain = %"word", s = "a b", "hello\nworld");
        });
        assert!(
            text.ends_with("  WARN t: hello\\nworld n=7 plain=word s=\"a b\"\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}e\u{7f}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001e\u007fé""#);
        let v: String = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}e\u{7f}é");
        s.clear();
        text_str(&mut s, "x\" y=1\nINFO forged");
        assert_eq!(s, r#""x\" y=1\nINFO forged""#);
        s.clear();
        message(&mut s, "line one\nline two\t\u{1b}[31m");
        assert_eq!(s, r"line one\nline two\t\u{1b}[31m");
        // Invisible and reordering characters are escaped in every form.
        let tricky = "x\u{202e}cba\u{2028}y\u{200b}z\u{7f}";
        s.clear();
        text_str(&mut s, tricky);
        assert_eq!(s, r#""x\u{202e}cba\u{2028}y\u{200b}z\u{7f}""#);
        s.clear();
        message(&mut s, tricky);
        assert_eq!(s, r"x\u{202e}cba\u{2028}y\u{200b}z\u{7f}");
        s.clear();
        json_str(&mut s, tricky);
        assert_eq!(s, r#""x\u202ecba\u2028y\u200bz\u007f""#);
        assert_eq!(serde_json::from_str::<String>(&s).unwrap(), tricky);
        // Printable non-ASCII stays as is; astral invisibles become pairs.
        s.clear();
        json_str(&mut s, "é中\u{e0001}");
        assert_eq!(s, r#""é中\udb40\udc01""#);
        assert_eq!(serde_json::from_str::<String>(&s).unwrap(), "é中\u{e0001}");
        assert!(is_plain("publisher,subscriber"));
        assert!(is_plain("10.0.0.1:443"));
        assert!(!is_plain("a b"));
        assert!(!is_plain(""));
    }
}
