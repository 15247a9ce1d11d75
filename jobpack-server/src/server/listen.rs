//! Serves the HTTP door's connections with hyper directly, in place of poem's `Server`.
//!
//! Why: poem's server boxes every connection's stream (its `BoxIo` has no vectored writes, so
//! hyper copies each body chunk into one flat write buffer) and leaves that buffer at hyper's
//! ~400 KiB default, which it does not expose. 200 slow SSE readers held ~44 MB of such copies.
//! Here each connection keeps its own stream type, hyper queues body chunks without copying
//! them (`writev`), and buffers at most [`MAX_BUF`] bytes before it waits for the socket.
//!
//! What poem's server did besides is kept: HTTP/1 and HTTP/2 (with upgrades), the idle timeout
//! (a connection that reads and writes nothing for that long is closed) and the graceful
//! shutdown (stop accepting, let requests in flight end, then close what is left after `grace`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use poem::endpoint::BoxEndpoint;
use poem::listener::Acceptor;
use poem::{Endpoint, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A response body as poem hands it to hyper.
type Body = http_body_util::combinators::BoxBody<hyper::body::Bytes, io::Error>;

/// The most a connection buffers for writing (and for reading a request head) before it waits
/// for the socket; hyper's floor is 8 KiB. One SSE event is at most 16 KiB of log.
pub const MAX_BUF: usize = 64 * 1024;

/// How connections are kept.
pub struct Options {
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout: Duration,
    /// After the stop signal, how long requests in flight may take before they are cut.
    pub grace: Duration,
}

/// Accepts connections from `acceptor` and answers them with `ep` until `stop` resolves, then
/// shuts down gracefully (see [`Options::grace`]).
pub async fn serve<A>(
    mut acceptor: A,
    ep: BoxEndpoint<'static>,
    opts: Options,
    stop: impl Future<Output = ()>,
) -> io::Result<()>
where
    A: Acceptor,
    A::Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let ep = Arc::new(ep);
    let (closing_tx, closing) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(done) = conns.join_next(), if !conns.is_empty() => reap(done),
            accepted = acceptor.accept() => {
                let (io, local, remote, scheme) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait, do not spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (ep, closing) = (ep.clone(), closing.clone());
                let activity = Arc::new(Activity::new());
                let busy = activity.clone();
                let service = hyper::service::service_fn(move |req| {
                    let ep = ep.clone();
                    let req = Request::from((req, local.clone(), remote.clone(), scheme.clone()));
                    let answering = Answering::new(busy.clone());
                    async move {
                        let resp = ep.get_response(req).await;
                        drop(answering);
                        Ok::<_, Infallible>(hyper::Response::<Body>::from(resp))
                    }
                });
                conns.spawn(connection(io, service, activity, opts.idle_timeout, closing));
            }
        }
    }
    drop(acceptor);
    if closing_tx.send(true).is_err() {
        // No connection is open.
    }
    let drained = tokio::time::timeout(opts.grace, async {
        while let Some(done) = conns.join_next().await {
            reap(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            connections = conns.len(),
            "closing connections still busy after the grace period"
        );
        conns.shutdown().await;
    }
    Ok(())
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("a connection's task panicked: {e}");
    }
}

/// Serves one connection until it ends, goes idle, or the server closes.
async fn connection<Io, S>(
    io: Io,
    service: S,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = Watched {
        inner: io,
        activity: activity.clone(),
    };
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().max_buf_size(MAX_BUF).writev(true);
    builder
        .http2()
        .max_pending_accept_reset_streams(Some(20))
        .max_header_list_size(16 * 1024);
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("a connection ended with an error: {e}");
            }
            return;
        }
        // No request being answered and nothing moved for the whole timeout: closed at once (a
        // graceful close would wait for a response that is not moving either).
        () = activity.idle(idle_timeout) => return,
        _ = closing.wait_for(|c| *c) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!("a connection ended with an error while closing: {e}");
    }
}

/// When a connection last read or wrote a byte (in milliseconds since it was accepted), and how
/// many of its requests the endpoint is answering now (a slow handler is not idleness).
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    answering: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            if self.answering.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(limit).await;
                continue;
            }
            let due =
                self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limit;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// One request being answered by the endpoint, until dropped (also when hyper drops the
/// future: the client went away).
struct Answering(Arc<Activity>);

impl Answering {
    fn new(a: Arc<Activity>) -> Self {
        a.answering.fetch_add(1, Ordering::Relaxed);
        Answering(a)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        // The idle time counts from the answer.
        self.0.touch();
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The door's listener, plain TCP or TLS, left unboxed so that vectored writes reach the socket.
pub enum Door {
    Plain(poem::listener::TcpAcceptor),
    Tls(super::tls::TlsAcceptor),
}

impl Acceptor for Door {
    type Io = tokio_util::either::Either<
        tokio::net::TcpStream,
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    >;

    fn local_addr(&self) -> Vec<poem::web::LocalAddr> {
        match self {
            Door::Plain(a) => a.local_addr(),
            Door::Tls(a) => a.local_addr(),
        }
    }

    async fn accept(
        &mut self,
    ) -> io::Result<(
        Self::Io,
        poem::web::LocalAddr,
        poem::web::RemoteAddr,
        poem::http::uri::Scheme,
    )> {
        use tokio_util::either::Either;
        Ok(match self {
            Door::Plain(a) => {
                let (io, l, r, s) = a.accept().await?;
                (Either::Left(io), l, r, s)
            }
            Door::Tls(a) => {
                let (io, l, r, s) = a.accept().await?;
                (Either::Right(io), l, r, s)
            }
        })
    }
}

/// A stream that records its activity; vectored writes pass through.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    fn moved<R>(&self, r: Poll<io::Result<R>>, n: impl Fn(&R) -> usize) -> Poll<io::Result<R>> {
        if let Poll::Ready(Ok(v)) = &r
            && n(v) > 0
        {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.moved(r, |_| read)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.moved(r, |n| *n)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.moved(r, |n| *n)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
