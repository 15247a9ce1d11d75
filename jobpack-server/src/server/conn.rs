//! Connection limits at the edge, below HTTP: at most `max` connections at once (a connection
//! over it is closed at once, so the server never runs out of file descriptors), and a deadline
//! for the first request head (`header_timeout` from accept to its blank line), so half-sent
//! requests cannot pile up. Idle connections are closed by `listen`'s idle timeout.
//!
//! It wraps any acceptor (plain TCP, or the TLS acceptor, whose streams are already decrypted),
//! so it sees the HTTP bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An acceptor that enforces [`Limits`](self).
pub struct Guarded<A> {
    inner: A,
    slots: Arc<Semaphore>,
    header_timeout: Duration,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, max_connections: usize, header_timeout: Duration) -> Self {
        Guarded {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            header_timeout,
        }
    }
}

impl<A: Acceptor> Acceptor for Guarded<A> {
    type Io = GuardedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (io, local, remote, scheme) = self.inner.accept().await?;
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                // Full: this connection is closed (dropped) at once.
                continue;
            };
            let io = GuardedIo {
                inner: io,
                _permit: permit,
                head: Some(HeadWatch {
                    deadline: Box::pin(tokio::time::sleep(self.header_timeout)),
                    matched: 0,
                }),
            };
            return Ok((io, local, remote, scheme));
        }
    }
}

struct HeadWatch {
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// How much of "\r\n\r\n" the bytes so far end with.
    matched: u8,
}

/// A connection holding one of the slots until it is dropped.
pub struct GuardedIo<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    head: Option<HeadWatch>,
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(h) = &mut self.head
            && h.deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head did not arrive in time",
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(h)) = (&r, &mut self.head) {
            for &b in &buf.filled()[before..] {
                h.matched = match (h.matched, b) {
                    (0 | 2, b'\r') => h.matched + 1,
                    (1 | 3, b'\n') => h.matched + 1,
                    (_, b'\r') => 1,
                    _ => 0,
                };
                if h.matched == 4 {
                    break;
                }
            }
            if h.matched == 4 {
                self.head = None;
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises this process's soft limit of open files to its hard limit (connections, job pipes and
/// logs all take descriptors). Returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let unlimited = u64::MAX;
    let (current, maximum) = (
        lim.current.unwrap_or(unlimited),
        lim.maximum.unwrap_or(unlimited),
    );
    if current >= maximum {
        return current;
    }
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => maximum,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            current
        }
    }
}
