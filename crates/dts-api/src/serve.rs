//! Serving the router over TCP with bounds on what a connection may hold:
//! how long a client may take to send a request head, how long a
//! keep-alive connection may sit idle, how long a request body may stall,
//! and how many connections are open at once.
//!
//! Each connection is HTTP/1.1 driven by hyper, watched by a small timer
//! (`Activity`) that knows whether the connection is idle, part-way
//! through a request head, or busy with a request. Only idle connections
//! and heads are timed: a busy connection (a long submit, an event stream
//! sending keep-alives) is left alone, and a request body that stops
//! arriving fails the read of that body instead. Above the connection cap a
//! new connection is answered 503 and closed at once, so it never holds a
//! descriptor. An accept error (out of descriptors, say) backs off and is
//! logged now and then, never in a loop. On shutdown the listener closes,
//! idle connections close, and requests in flight get [`DRAIN_GRACE`] to
//! finish.

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// How long requests in flight may take to finish once shutdown began;
/// connections still open then (an event stream of a long task) are closed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How often at most a repeated warning (accept errors, refused
/// connections) is logged; the ones in between are counted.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The first and the longest pause after an accept error.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a connection above the cap gets before it is closed.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
connection: close\r\n\
retry-after: 1\r\n\
content-length: 96\r\n\r\n\
{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections; try again in a moment\"}}";

/// Bounds on connections (`server.*-timeout-ms`, `server.max-connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// From the first byte of a request head to its end.
    pub header_read_timeout: Duration,
    /// How long a connection may wait, with no request in flight, for the
    /// first byte of the next one.
    pub idle_timeout: Duration,
    /// How long the read of a request body may wait for its next bytes.
    pub body_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut accept_errors = Throttle::default();
    let mut refusals = Throttle::default();
    let mut backoff = BACKOFF_MIN;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                backoff = BACKOFF_MIN;
                stream
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: waiting is the only cure, and
                // looping at once would spin on the same error.
                if let Some(suppressed) = accept_errors.ready() {
                    warn!(error = %e, suppressed, pause_ms = backoff.as_millis() as u64,
                        "cannot accept connections; pausing");
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if let Some(suppressed) = refusals.ready() {
                warn!(
                    limit = settings.max_connections,
                    suppressed,
                    "connection limit reached (server.max-connections); refusing new connections with 503"
                );
            }
            // One non-blocking write into a fresh socket's empty buffer;
            // whatever does not fit is dropped with the connection.
            let _ = stream.try_write(BUSY_RESPONSE);
            continue;
        };
        connections.spawn(connection(
            stream,
            app.clone(),
            settings,
            permit,
            closing.clone(),
        ));
    }
    drop(listener);
    closing.cancel();
    connections.close();
    let open = connections.len();
    if open > 0 {
        info!(open, "no new connections; waiting for requests in flight");
    }
    if tokio::time::timeout(DRAIN_GRACE, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            grace_secs = DRAIN_GRACE.as_secs(),
            "connections still open after the drain grace; closing them"
        );
    }
    Ok(())
}

/// Errors that concern only the connection being accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    app: Router,
    settings: ConnectionSettings,
    _permit: OwnedSemaphorePermit,
    closing: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = Busy::begin(Arc::clone(&requests));
        let request = request.map(|body| Body::new(TimedBody::new(body, settings.body_timeout)));
        let app = app.clone();
        async move {
            let response = match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, std::convert::Infallible>(
                response.map(|body| TrackedBody { body, _busy: busy }),
            )
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            outcome = conn.as_mut() => {
                if let Err(e) = outcome {
                    debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            why = activity.expired(&settings) => {
                debug!(why, "closing a connection");
                return;
            }
            _ = closing.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Where a connection is in its life, for the timeouts.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in flight and no byte of the next one since this instant.
    Idle(Instant),
    /// The first bytes of a request head arrived at this instant.
    Head(Instant),
    /// This many requests are in flight (their responses not yet sent).
    Busy(usize),
}

/// The phase of one connection, shared by its socket, its requests and its
/// timer.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            phase: Mutex::new(Phase::Idle(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        *phase = f(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    fn bytes_read(&self) {
        let phase = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Phase::Idle(_) = phase {
            self.update(|phase| match phase {
                Phase::Idle(_) => Phase::Head(Instant::now()),
                other => other,
            });
        }
    }

    /// Resolves when the connection has been idle or reading a head for
    /// too long, with the reason.
    async fn expired(&self, settings: &ConnectionSettings) -> &'static str {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let phase = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
            let (deadline, why) = match phase {
                Phase::Idle(since) => (since + settings.idle_timeout, "idle too long"),
                Phase::Head(since) => (
                    since + settings.header_read_timeout,
                    "request head not complete in time",
                ),
                Phase::Busy(_) => {
                    notified.await;
                    continue;
                }
            };
            if Instant::now() >= deadline {
                return why;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = notified => {}
            }
        }
    }
}

/// A request in flight, from its head until its response has been sent
/// (or dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Busy {
        activity.update(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Idle(_) | Phase::Head(_) => Phase::Busy(1),
        });
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let outcome = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(outcome, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        outcome
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request counted as in flight until it
/// has been sent.
struct TrackedBody {
    body: Body,
    /// Dropped with the body, once hyper has sent it or given up.
    _busy: Busy,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body whose next bytes must come within `timeout` of being
/// asked for; otherwise the read fails.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            timer: None,
        }
    }
}

/// The request body stalled for longer than `server.body-timeout-ms`.
#[derive(Debug, thiserror::Error)]
#[error("no part of the request body arrived for {} ms (server.body-timeout-ms)", .0.as_millis())]
struct BodyStalled(Duration);

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(Box::new(BodyStalled(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Lets a repeated warning through at most once per [`WARN_EVERY`].
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(how many were held back since the last one)` when it is time
    /// to log again.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + WARN_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_warning_repeats_at_most_once_per_interval_and_counts_the_rest() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        tokio::time::advance(WARN_EVERY).await;
        assert_eq!(throttle.ready(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout_and_a_busy_one_never() {
        let settings = ConnectionSettings {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            ..ConnectionSettings::default()
        };
        let activity = Arc::new(Activity::new());
        let started = Instant::now();
        assert_eq!(activity.expired(&settings).await, "idle too long");
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        let activity = Arc::new(Activity::new());
        let busy = Busy::begin(Arc::clone(&activity));
        let waiting = tokio::time::timeout(Duration::from_secs(3600), activity.expired(&settings));
        assert!(waiting.await.is_err(), "a busy connection never expires");
        drop(busy);
        let since = Instant::now();
        assert_eq!(activity.expired(&settings).await, "idle too long");
        assert_eq!(
            since.elapsed(),
            Duration::from_secs(5),
            "idle from the response on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_must_end_within_the_header_timeout() {
        let settings = ConnectionSettings {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            ..ConnectionSettings::default()
        };
        let activity = Arc::new(Activity::new());
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.bytes_read();
        let since = Instant::now();
        // More bytes do not restart the clock.
        activity.bytes_read();
        assert_eq!(
            activity.expired(&settings).await,
            "request head not complete in time"
        );
        assert_eq!(since.elapsed(), Duration::from_secs(2));
    }
}
