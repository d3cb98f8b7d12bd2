//! The accept loop: the routes served over HTTP/1.1 by hyper, with the
//! connection bounds that poem's own `Server` lacks.
//!
//! - **A deadline for request headers** (hyper's `header_read_timeout`): a
//!   client that sends half a request and stops, or trickles one header line
//!   at a time, is disconnected when the deadline passes. The same deadline
//!   runs while a kept-alive connection waits for its next request, so it is
//!   also the keep-alive idle timeout.
//! - **An idle timeout in every other state**: a connection on which nothing
//!   is read or written for [`ConnectionLimits::idle_timeout`] is dropped
//!   (a client that stops reading its response, for one). Bodies have their
//!   own deadline in the GraphQL handler.
//! - **A cap on open connections**: one over the cap is closed at once, so
//!   a flood of idle sockets cannot exhaust the process's file descriptors;
//!   the others keep being served.
//!
//! HTTP/2 is not offered: TLS and HTTP/2 belong to the reverse proxy in
//! front, and HTTP/1.1 alone keeps the surface small.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::endpoint::BoxEndpoint;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint as _, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// How long accepting pauses after the operating system refuses a new
/// socket (out of file descriptors): long enough not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The most a request's line and headers may take.
const MAX_HEAD_BYTES: usize = 128 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at once; more are closed on arrival.
    pub max_connections: usize,
    /// Longest wait for a request's headers, from the first byte awaited.
    pub header_read_timeout: Duration,
    /// Longest a connection may go without reading or writing a byte.
    pub idle_timeout: Duration,
}

/// Serves `endpoint` on `listener` until `shutdown` completes, then stops
/// accepting and lets the connections finish their requests in flight
/// (for up to `grace`).
///
/// # Errors
/// When the listening socket fails for good.
pub async fn serve(
    listener: TcpListener,
    endpoint: BoxEndpoint<'static, Response>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let endpoint: Arc<BoxEndpoint<'static, Response>> = Arc::new(endpoint);
    let local = Addr::from(listener.local_addr()?);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(Stop::Serving);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            crate::metrics::connection_refused();
            tracing::debug!(remote = %remote, "connection closed: at the connection cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            endpoint: Arc::clone(&endpoint),
            local: local.clone(),
            remote: Addr::from(remote),
            limits,
        };
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            connection.serve(stream, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(Stop::Gracefully);
    // Every slot back means every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period; closing them"
        );
        let _ = stop_tx.send(Stop::Now);
    }
    Ok(())
}

/// What the accept loop asks of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Serving,
    /// Finish the request in flight, then close.
    Gracefully,
    /// Close now (the grace period is over).
    Now,
}

struct Connection {
    endpoint: Arc<BoxEndpoint<'static, Response>>,
    local: Addr,
    remote: Addr,
    limits: ConnectionLimits,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut stop: watch::Receiver<Stop>) {
        let activity = Activity::new();
        let io = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        let Connection {
            endpoint,
            local,
            remote,
            limits,
        } = self;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let endpoint = Arc::clone(&endpoint);
            let parts = (
                req,
                LocalAddr(local.clone()),
                RemoteAddr(remote.clone()),
                poem::http::uri::Scheme::HTTP,
            );
            async move {
                let response = endpoint.get_response(poem::Request::from(parts)).await;
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // Request line and headers: enough for a GET carrying a document
            // as long as a POST body may be (see `http::graphql`); longer
            // heads are refused with 431.
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut stopping = false;
        loop {
            let idle_until = activity.last() + limits.idle_timeout;
            tokio::select! {
                _ = &mut connection => return,
                () = tokio::time::sleep_until(idle_until) => {
                    if activity.last() + limits.idle_timeout <= Instant::now() {
                        tracing::debug!("connection closed: idle");
                        return;
                    }
                }
                changed = stop.changed() => {
                    let asked = if changed.is_ok() { *stop.borrow_and_update() } else { Stop::Now };
                    match asked {
                        Stop::Serving => {}
                        Stop::Gracefully if !stopping => {
                            stopping = true;
                            connection.as_mut().graceful_shutdown();
                        }
                        Stop::Gracefully => {}
                        Stop::Now => return,
                    }
                }
            }
        }
    }
}

/// When a connection last read or wrote a byte.
#[derive(Clone)]
struct Activity {
    since: Instant,
    /// Milliseconds after `since`.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records its activity.
struct Watched {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
