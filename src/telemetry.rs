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

use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
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
                .fmt_fields(NoSpanFields)
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
/// polled, on whichever thread polls it, and while it is dropped.
pub fn in_request<F: Future>(id: Arc<str>, future: F) -> InRequest<F> {
    InRequest {
        id: Some(id),
        inner: Some(future),
    }
}

/// `future`, with the current request's id (if any) on the lines it logs:
/// for a task spawned by a request, which outlives the request's own polls.
pub fn in_current_request<F: Future>(future: F) -> InRequest<F> {
    InRequest {
        id: current_request_id(),
        inner: Some(future),
    }
}

pin_project_lite::pin_project! {
    /// See [`in_request`].
    pub struct InRequest<F> {
        id: Option<Arc<str>>,
        // `None` only while it is dropped.
        #[pin]
        inner: Option<F>,
    }

    impl<F> PinnedDrop for InRequest<F> {
        // A request abandoned before it finished (its client went away) is
        // dropped with its id too, for the lines its destructors log.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let _scope = Scope::enter(this.id);
            let mut inner = this.inner;
            inner.set(None);
        }
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _scope = Scope::enter(this.id);
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx),
            // Only `drop` takes it, and nothing polls a dropped future.
            None => Poll::Pending,
        }
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
pub fn with_request_id<T>(mut id: Option<Arc<str>>, work: impl FnOnce() -> T) -> T {
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
        let mut span = String::with_capacity(48 + id.len());
        span.push_str("{\"request_id\":");
        push_json_string(&mut span, &id);
        span.push_str(",\"name\":\"request\"}");
        let comma = if members.ends_with('{') { "" } else { "," };
        writeln!(writer, "{members}{comma}\"span\":{span}}}")
    }
}

/// Span fields, formatted for no line: JSON lines show no span but the
/// request's (see [`WithRequestId`]), so the libraries' spans are not
/// formatted at all when they are made.
struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _: Writer<'writer>, _: R) -> fmt::Result {
        Ok(())
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

    fn json_lines(log: impl FnOnce()) -> Vec<serde_json::Value> {
        captured_lines(LogFormat::Json, log)
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON object a line"))
            .collect()
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
        let lines = json_lines(log_around_requests);
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

    /// Pending at its first poll, ready at the next.
    #[derive(Default)]
    struct YieldOnce(bool);

    impl Future for YieldOnce {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Logs when dropped.
    struct LogsOnDrop;

    impl Drop for LogsOnDrop {
        fn drop(&mut self) {
            tracing::info!(n = 9, "dropped");
        }
    }

    #[test]
    fn the_id_stays_with_its_request_between_polls_and_while_it_is_dropped() {
        let lines = json_lines(|| {
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut request = Box::pin(in_request(Arc::from("r-1"), async {
                YieldOnce::default().await;
                tracing::info!(n = 1, "after a pending poll");
            }));
            assert!(request.as_mut().poll(&mut cx).is_pending());
            assert_eq!(current_request_id(), None, "not between polls");
            tracing::info!(n = 2, "between the polls");
            assert!(request.as_mut().poll(&mut cx).is_ready());

            let mut abandoned = Box::pin(in_request(Arc::from("r-2"), async {
                let _guard = LogsOnDrop;
                YieldOnce::default().await;
            }));
            assert!(abandoned.as_mut().poll(&mut cx).is_pending());
            drop(abandoned);

            let spawned = with_request_id(Some(Arc::from("r-3")), || in_current_request(async {}));
            assert_eq!(spawned.id.as_deref(), Some("r-3"));
        });
        let seen: Vec<_> = lines
            .iter()
            .map(|l| (l["n"].as_u64().unwrap(), l["span"]["request_id"].as_str()))
            .collect();
        assert_eq!(seen, [(2, None), (1, Some("r-1")), (9, Some("r-2"))]);
    }
}
