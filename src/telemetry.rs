//! Logging through `tracing` to stderr, as text for people or JSON for log
//! shippers; `RUST_LOG` filters.
//!
//! Every line logged while a request is served carries the request's id.
//! The id is not kept in a `tracing` span: making and closing a span per
//! request, and entering it at every poll, was a sixth of the instructions
//! of a `/healthz` (bench/RESULTS.md). [`in_request`] keeps it in a
//! thread-local while the request's future is polled, and the line format
//! adds it to the lines that are written, which at the default level is
//! few requests' lines.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Later calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: not in files or log shippers.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ =
        tracing::subscriber::set_global_default(subscriber(format, filter, ansi, std::io::stderr));
}

/// The subscriber [`init`] installs, writing to `writer`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let line = tracing_subscriber::fmt::format();
    match format {
        LogFormat::Text => Box::new(
            builder
                .event_format(WithRequestId::text(line.with_ansi(ansi)))
                .finish(),
        ),
        LogFormat::Json => Box::new(
            builder
                .fmt_fields(JsonSpanFields)
                .event_format(WithRequestId::json(
                    line.json()
                        .with_ansi(false)
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_span_list(false),
                ))
                .finish(),
        ),
    }
}

thread_local! {
    /// The id of the request this thread is serving, while it is polled.
    static REQUEST_ID: Cell<Option<Arc<str>>> = const { Cell::new(None) };
}

/// `future`, with `id` as the request id of every line logged while it is
/// polled, on whichever thread polls it.
pub fn in_request<F: Future>(id: Arc<str>, future: F) -> InRequest<F> {
    InRequest {
        id: Some(id),
        inner: future,
    }
}

pin_project_lite::pin_project! {
    /// See [`in_request`].
    pub struct InRequest<F> {
        id: Option<Arc<str>>,
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _scope = Scope::enter(this.id);
        this.inner.poll(cx)
    }
}

/// The id of the request being served here, to carry to another thread.
pub fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID
        .try_with(|current| {
            let id = current.take();
            current.set(id.clone());
            id
        })
        .ok()
        .flatten()
}

/// Runs `work` with `id` as the request id of the lines it logs (a job on
/// a hashing thread, for the request that sent it).
pub fn with_request_id<T>(id: Option<Arc<str>>, work: impl FnOnce() -> T) -> T {
    let mut id = id;
    let _scope = Scope::enter(&mut id);
    work()
}

/// While alive, the id in `slot` is the thread's (moved, not copied);
/// dropped, also by a panic, the thread has its previous id again and
/// `slot` its own.
struct Scope<'a> {
    slot: &'a mut Option<Arc<str>>,
    previous: Option<Arc<str>>,
}

impl<'a> Scope<'a> {
    fn enter(slot: &'a mut Option<Arc<str>>) -> Self {
        let previous = REQUEST_ID
            .try_with(|current| current.replace(slot.take()))
            .unwrap_or(None);
        Self { slot, previous }
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        *self.slot = REQUEST_ID
            .try_with(|current| current.replace(previous))
            .unwrap_or(None);
    }
}

/// tracing-subscriber's line, text or JSON, with the request id added when
/// the line is logged while a request is served: `request_id=ID` at the
/// end of a text line; `"span":{"request_id":ID,"name":"request"}` in a
/// JSON object, where the request span used to put it.
struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequestId<F> {
    fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
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
        let Some(id) = current_request_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        if !self.json {
            return writeln!(writer, "{line} request_id={id}");
        }
        let Some(members) = line.strip_suffix('}') else {
            return writeln!(writer, "{line}");
        };
        let mut span = JsonObject::default();
        span.text.push_str("\"request_id\":");
        push_json_string(&mut span.text, &id);
        span.text.push_str(",\"name\":\"request\"}");
        let comma = if members.ends_with('{') { "" } else { "," };
        writeln!(writer, "{members}{comma}\"span\":{}}}", span.text)
    }
}

/// A span's fields as a JSON object, written as they are visited.
///
/// The JSON formatter formats a span's fields when the span is made (the
/// lines do not show them, but the libraries' spans are still made), and
/// tracing-subscriber's own `JsonFields` builds a map of
/// `serde_json::Value`s to do it, which was a tenth of the instructions of
/// a cached `/auth/verify` when each request had a span
/// (bench/RESULTS.md). Events are formatted by the JSON formatter itself.
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

    use futures_util::FutureExt as _;

    use super::*;

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

    fn captured_lines(format: LogFormat, log: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = subscriber(format, EnvFilter::new("info"), false, move || {
            writer.clone()
        });
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// Logs a line outside any request, one in request "r-1" (and, from
    /// there, one as a hashing thread does it for request "r-2"), then one
    /// after a panic inside request "r-3".
    fn log_around_requests() {
        tracing::info!(n = 1, "outside");
        let request = in_request(Arc::from("r-1"), async {
            tracing::info!(n = 2, "inside");
            let carried = current_request_id();
            assert_eq!(carried.as_deref(), Some("r-1"));
            with_request_id(Some(Arc::from("r-2")), || tracing::info!(n = 3, "job"));
            tracing::info!(n = 4, "inside again");
        });
        request.now_or_never().expect("ready at once");
        let panicked = std::panic::catch_unwind(|| {
            in_request(Arc::from("r-3"), async { panic!("a bug") }).now_or_never()
        });
        assert!(panicked.is_err());
        assert_eq!(current_request_id(), None, "a panic leaves no id behind");
        tracing::info!(n = 5, "outside again");
    }

    #[test]
    fn json_lines_carry_the_request_id_of_the_request_they_were_logged_in() {
        let lines = captured_lines(LogFormat::Json, log_around_requests);
        let lines: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON object a line"))
            .collect();
        let ids: Vec<_> = lines
            .iter()
            .map(|l| l["span"]["request_id"].clone())
            .collect();
        assert_eq!(
            ids,
            [
                serde_json::Value::Null,
                "r-1".into(),
                "r-2".into(),
                "r-1".into(),
                serde_json::Value::Null
            ]
        );
        for (n, line) in (1..).zip(&lines) {
            assert_eq!(line["n"], n, "{line}");
            assert_eq!(line["level"], "INFO", "{line}");
            assert!(line["timestamp"].is_string(), "{line}");
            assert!(line["message"].is_string(), "{line}");
            if !line["span"].is_null() {
                assert_eq!(line["span"]["name"], "request", "{line}");
            }
        }
    }

    #[test]
    fn text_lines_end_with_the_request_id() {
        let lines = captured_lines(LogFormat::Text, log_around_requests);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[0].ends_with("outside n=1"), "{lines:?}");
        assert!(lines[1].ends_with("inside n=2 request_id=r-1"), "{lines:?}");
        assert!(lines[2].ends_with("job n=3 request_id=r-2"), "{lines:?}");
        assert!(
            lines[3].ends_with("inside again n=4 request_id=r-1"),
            "{lines:?}"
        );
        assert!(lines[4].ends_with("outside again n=5"), "{lines:?}");
    }
}
