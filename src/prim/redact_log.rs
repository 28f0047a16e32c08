//! The log formatters: every field value is redacted ([`secret::redact`]) *before* it is
//! formatted — quoted for text, escaped for JSON — so a secret containing `"` or `\` cannot
//! slip past redaction as its escaped form. The formatted line then goes through
//! [`secret::RedactingWriter`] as well (a second scan for text no field carried).
//!
//! [`init`] installs the subscriber `provhost` logs through (`--log-format text|json`),
//! decorated for where stderr goes ([`stderr_sink`]: a terminal, a file or pipe, or the
//! systemd journal).

use std::collections::BTreeMap;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use super::secret;

/// Text fields: `message key="value" key=value`, each value redacted first.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedactingFields;

struct TextVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_, '_> {
    fn put(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name().strip_prefix("r#").unwrap_or(field.name());
        self.result = if name == "message" {
            write!(self.writer, "{sep}{value}")
        } else {
            write!(self.writer, "{sep}{name}={value}")
        };
    }
}

impl Visit for TextVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let clean = secret::redact(value);
        if field.name() == "message" {
            self.put(field, &clean);
        } else {
            self.put(field, &format!("{clean:?}"));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.put(field, &secret::redact(&text));
    }
}

impl<'w> FormatFields<'w> for RedactingFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut v = TextVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

/// JSON fields (spans keep theirs as a JSON object text), each value redacted first.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedactingJsonFields;

#[derive(Default)]
struct JsonVisitor(BTreeMap<String, serde_json::Value>);

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name().strip_prefix("r#").unwrap_or(field.name());
        self.0.insert(name.to_string(), value);
    }
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, secret::redact(value).into_owned().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.put(field, secret::redact(&text).into_owned().into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
}

impl<'w> FormatFields<'w> for RedactingJsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut v = JsonVisitor::default();
        fields.record(&mut v);
        let text = serde_json::to_string(&v.0).map_err(|_| fmt::Error)?;
        writer.write_str(&text)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut v = JsonVisitor::default();
        if !current.fields.is_empty() {
            v.0 = serde_json::from_str(&current.fields).map_err(|_| fmt::Error)?;
        }
        fields.record(&mut v);
        current.fields = serde_json::to_string(&v.0).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

/// One JSON object per line, shaped like `tracing-subscriber`'s JSON format:
/// `timestamp`, `level`, `fields`, `target`, `span` (the innermost) and `spans`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedactingJson;

impl<S> FormatEvent<S, RedactingJsonFields> for RedactingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, RedactingJsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert(
            "fields".into(),
            serde_json::Value::Object(fields.0.into_iter().collect()),
        );
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            let mut spans = Vec::new();
            for span in scope.from_root() {
                let mut obj: serde_json::Map<String, serde_json::Value> = span
                    .extensions()
                    .get::<FormattedFields<RedactingJsonFields>>()
                    .and_then(|f| serde_json::from_str(&f.fields).ok())
                    .unwrap_or_default();
                obj.insert("name".into(), span.name().into());
                spans.push(serde_json::Value::Object(obj));
            }
            if let Some(last) = spans.last() {
                line.insert("span".into(), last.clone());
            }
            line.insert("spans".into(), spans.into());
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Log format of `provhost`'s stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Where the log lines go, which decides their decoration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// A person at a terminal: colours, timestamps.
    Terminal,
    /// A file or pipe: timestamps, no colour codes.
    Plain,
    /// The systemd journal (`JOURNAL_STREAM` names stderr): no colour codes and no
    /// timestamps in text (the journal stamps each line), a `<N>` syslog priority prefix
    /// per line so `journalctl -p` filters by level. JSON lines keep their `timestamp`
    /// field (it is data) and get no prefix.
    Journal,
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn syslog_priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// A text event format with a `<N>` syslog priority prefix (for [`Sink::Journal`]).
#[derive(Debug, Clone)]
pub struct SyslogPrefix<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for SyslogPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The subscriber `provhost` logs through: `filter`, field values redacted before they are
/// formatted, lines decorated for `sink`, written by `writer` (production:
/// [`secret::RedactingWriter`]).
pub fn subscriber<W>(
    format: Format,
    filter: tracing_subscriber::EnvFilter,
    sink: Sink,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_ansi(sink == Sink::Terminal)
        .with_env_filter(filter)
        .with_writer(writer);
    match (format, sink) {
        (Format::Text, Sink::Journal) => Box::new(
            builder
                .fmt_fields(RedactingFields)
                .event_format(SyslogPrefix(
                    tracing_subscriber::fmt::format()
                        .without_time()
                        .with_ansi(false),
                ))
                .finish(),
        ),
        (Format::Text, _) => Box::new(builder.fmt_fields(RedactingFields).finish()),
        (Format::Json, _) => Box::new(
            builder
                .with_ansi(false)
                .fmt_fields(RedactingJsonFields)
                .event_format(RedactingJson)
                .finish(),
        ),
    }
}

/// Install [`subscriber`] with the redacting stderr writer as the global default.
pub fn init(format: Format, filter: tracing_subscriber::EnvFilter, sink: Sink) {
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = subscriber(format, filter, sink, secret::RedactingWriter).try_init();
}

/// The sink stderr is: [`Sink::Journal`] when `JOURNAL_STREAM` (`DEVICE:INODE`, set by
/// systemd for a service whose output goes to the journal) names the file stderr is,
/// [`Sink::Terminal`] for a terminal, else [`Sink::Plain`].
pub fn stderr_sink() -> Sink {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let stderr = std::io::stderr();
    if let Some(stream) = std::env::var_os("JOURNAL_STREAM") {
        let ids = stderr
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| std::fs::File::from(fd).metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        if let Some(ids) = ids {
            if journal_stream_names(&stream.to_string_lossy(), ids) {
                return Sink::Journal;
            }
        }
    }
    if stderr.is_terminal() {
        Sink::Terminal
    } else {
        Sink::Plain
    }
}

/// Whether `JOURNAL_STREAM`'s `DEVICE:INODE` value is the file with `(dev, ino)`.
pub fn journal_stream_names(value: &str, (dev, ino): (u64, u64)) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

#[cfg(test)]
mod sink_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    fn lines(sink: Sink) -> String {
        let buf = Buf::default();
        let sub = subscriber(
            Format::Text,
            tracing_subscriber::EnvFilter::new("info"),
            sink,
            buf.clone(),
        );
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(computer = "vm1", "boot slow");
            tracing::info!("loaded");
        });
        let out = buf.0.lock().expect("lock").clone();
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn journal_lines_have_a_priority_prefix_and_no_time_or_colour() {
        let out = lines(Sink::Journal);
        let l: Vec<&str> = out.lines().collect();
        assert_eq!(l.len(), 2, "{out}");
        assert!(l[0].starts_with("<4> WARN"), "{out}");
        assert!(l[0].contains("boot slow computer=\"vm1\""), "{out}");
        assert!(l[1].starts_with("<6> INFO"), "{out}");
        assert!(!out.contains('\x1b'), "{out}");
        // No timestamp: the level follows the prefix directly.
        assert!(
            !out.lines()
                .any(|l| l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)),
            "{out}"
        );
    }

    #[test]
    fn plain_lines_have_a_timestamp_and_no_colour() {
        let out = lines(Sink::Plain);
        assert!(!out.contains('\x1b'), "{out}");
        assert!(!out.starts_with('<'), "{out}");
        // RFC 3339 time first: "2026-12-07T…".
        assert!(
            out.as_bytes().first().is_some_and(u8::is_ascii_digit),
            "{out}"
        );
        assert!(
            out.lines().all(|l| l.contains('T') && l.contains(':')),
            "{out}"
        );
    }

    #[test]
    fn journal_stream_must_name_the_same_file() {
        assert!(journal_stream_names("8:12345", (8, 12345)));
        assert!(journal_stream_names("8:12345\n", (8, 12345)));
        assert!(!journal_stream_names("8:12346", (8, 12345)));
        assert!(!journal_stream_names("garbage", (8, 12345)));
        assert!(!journal_stream_names("", (8, 12345)));
    }
}
