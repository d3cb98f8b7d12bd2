//! Logging through `tracing` to stderr, as text for people or JSON for log
//! shippers; `RUST_LOG` filters.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Later calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: not in files or log shippers.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(JsonSpanFields)
            .try_init(),
    };
}

/// A span's fields as a JSON object, written as they are visited.
///
/// The JSON formatter formats a span's fields when the span is made, and
/// every request makes one (its id); tracing-subscriber's own `JsonFields`
/// builds a map of `serde_json::Value`s to do it, which was a tenth of the
/// instructions of a cached `/auth/verify` (bench/RESULTS.md). Events are
/// formatted by the JSON formatter itself, which reads these objects back.
struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut object = JsonObject::default();
        fields.record(&mut object);
        object.finish(&mut writer)
    }

    /// Fields recorded after the span was made join its object.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut object = JsonObject::default();
        if let Some(members) = current
            .fields
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        {
            object.text.push_str(members);
        }
        fields.record(&mut object);
        current.fields.clear();
        object.finish(&mut current.as_writer())
    }
}

/// A JSON object, as text, written member by member.
struct JsonObject {
    /// `{` and the members so far, comma-separated.
    text: String,
}

impl Default for JsonObject {
    fn default() -> Self {
        // Room for a request id's span without growing.
        let mut text = String::with_capacity(64);
        text.push('{');
        Self { text }
    }
}

impl JsonObject {
    fn member(&mut self, field: &Field, value: impl serde::Serialize) {
        self.name(field);
        // Numbers and booleans always serialise (a non-finite float as null).
        let value = serde_json::to_string(&value).unwrap_or_else(|_| "null".to_owned());
        self.text.push_str(&value);
    }

    fn string_member(&mut self, field: &Field, value: &str) {
        self.name(field);
        push_json_string(&mut self.text, value);
    }

    fn name(&mut self, field: &Field) {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        let name = field.name();
        push_json_string(&mut self.text, name.strip_prefix("r#").unwrap_or(name));
        self.text.push(':');
    }

    fn finish(mut self, writer: &mut Writer<'_>) -> fmt::Result {
        self.text.push('}');
        writer.write_str(&self.text)
    }
}

/// `text` as a JSON string. Field names and request ids need no escapes,
/// and are copied as they are.
fn push_json_string(out: &mut String, text: &str) {
    let plain = text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

impl Visit for JsonObject {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string_member(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string_member(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::JsonSpanFields;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn span_fields_are_a_json_object_even_with_quotes_and_later_fields() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(JsonSpanFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "3f2a-77_b.c:1",
                quoted = "a\"b\\c\nd",
                attempt = 3_u64,
                later = tracing::field::Empty
            );
            span.record("later", true);
            span.in_scope(|| tracing::info!(shown = ?Some(1), "inside"));
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "inside");
        assert_eq!(line["span"]["request_id"], "3f2a-77_b.c:1");
        assert_eq!(line["span"]["quoted"], "a\"b\\c\nd");
        assert_eq!(line["span"]["attempt"], 3);
        assert_eq!(line["span"]["later"], true);
        assert_eq!(line["span"]["name"], "request");
    }
}
