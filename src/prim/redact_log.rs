//! The log formatters: every field value is redacted ([`secret::redact`]) *before* it is
//! formatted — quoted for text, escaped for JSON — so a secret containing `"` or `\` cannot
//! slip past redaction as its escaped form. The formatted line then goes through
//! [`secret::RedactingWriter`] as well (a second scan for text no field carried).
//!
//! [`init`] installs the subscriber `provhost` logs through (`--log-format text|json`).

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

/// The subscriber `provhost` logs through: `filter`, field values redacted before they are
/// formatted, lines written by `writer` (production: [`secret::RedactingWriter`]).
pub fn subscriber<W>(
    format: Format,
    filter: tracing_subscriber::EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        Format::Text => Box::new(builder.fmt_fields(RedactingFields).finish()),
        Format::Json => Box::new(
            builder
                .with_ansi(false)
                .fmt_fields(RedactingJsonFields)
                .event_format(RedactingJson)
                .finish(),
        ),
    }
}

/// Install [`subscriber`] with the redacting stderr writer as the global default.
pub fn init(format: Format, filter: tracing_subscriber::EnvFilter, ansi: bool) {
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = subscriber(format, filter, ansi, secret::RedactingWriter).try_init();
}
