//! A local HTTP proxy through which libgit2 reaches http(s) remotes, so that git fetches obey the
//! same [`Destinations`] as downloads: libgit2 cannot be given a resolver, but it can be given a
//! proxy. The proxy resolves the target itself, checks every address, and connects to a checked
//! one, so a name that resolves to a public address when checked and to a private one when
//! connected (DNS rebinding) cannot slip through.
//!
//! It takes `CONNECT host:port` (https; the TLS session is end to end between libgit2 and the
//! remote) and absolute-form requests (`GET http://host/path HTTP/1.1`; rewritten to origin form
//! with `Connection: close`, so each request is checked on its own connection). It listens on
//! 127.0.0.1 only. A job with the host network could reach it too, and gain nothing: it forwards
//! only to destinations the policy allows, which that job reaches directly anyway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Destinations, ResolveError};

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct EgressProxy {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl EgressProxy {
    /// Starts the proxy on 127.0.0.1 (an ephemeral port) on the current tokio runtime.
    pub async fn start(dests: Arc<Destinations>) -> std::io::Result<EgressProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let d = dests.clone();
                // The client (libgit2) sees the status line and its text.
                tokio::spawn(async move { serve(sock, &d).await });
            }
        });
        Ok(EgressProxy {
            url: format!("http://{addr}"),
            task,
        })
    }

    /// The proxy URL to give libgit2.
    pub fn url(&self) -> &str {
        &self.url
    }
}

async fn reply(sock: &mut TcpStream, status: &str, why: &str) {
    let body = format!("{why}\n");
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The client may be gone already; there is no one else to tell.
    sock.write_all(msg.as_bytes()).await.ok();
}

async fn serve(mut sock: TcpStream, dests: &Destinations) {
    // The request head, bounded in size and time.
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(end) = find_end(&head) {
                return Some(end);
            }
            if head.len() > MAX_HEAD {
                return None;
            }
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let Ok(Some(end)) = read else {
        return reply(&mut sock, "400 Bad Request", "incomplete or oversized request head").await;
    };
    let rest = head.split_off(end);
    let Ok(text) = std::str::from_utf8(&head) else {
        return reply(&mut sock, "400 Bad Request", "the request head is not UTF-8").await;
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    if method == "CONNECT" {
        let Some((host, port)) = target.rsplit_once(':') else {
            return reply(&mut sock, "400 Bad Request", "CONNECT needs host:port").await;
        };
        let Ok(port) = port.parse::<u16>() else {
            return reply(&mut sock, "400 Bad Request", "bad port").await;
        };
        let mut up = match connect_checked(dests, host, port).await {
            Ok(s) => s,
            Err((status, why)) => return reply(&mut sock, status, &why).await,
        };
        if sock
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_ok()
            && up.write_all(&rest).await.is_ok()
        {
            // Either side closing ends the tunnel; there is nothing to report.
            tokio::io::copy_bidirectional(&mut sock, &mut up).await.ok();
        }
        return;
    }
    // Absolute form: http://host[:port]/path
    let Ok(url) = url::Url::parse(target) else {
        return reply(&mut sock, "400 Bad Request", "expected an absolute http:// URL").await;
    };
    if url.scheme() != "http" {
        return reply(&mut sock, "400 Bad Request", "only http:// is proxied in the clear").await;
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let mut up = match connect_checked(dests, &host, port).await {
        Ok(s) => s,
        Err((status, why)) => return reply(&mut sock, status, &why).await,
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut out = format!("{method} {path} {version}\r\n");
    for h in headers {
        let name = h.split_once(':').map(|(k, _)| k.trim()).unwrap_or(h);
        if name.eq_ignore_ascii_case("proxy-authorization")
            || name.eq_ignore_ascii_case("proxy-connection")
            || name.eq_ignore_ascii_case("connection")
        {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    if up.write_all(out.as_bytes()).await.is_ok() && up.write_all(&rest).await.is_ok() {
        tokio::io::copy_bidirectional(&mut sock, &mut up).await.ok();
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

async fn connect_checked(
    dests: &Destinations,
    host: &str,
    port: u16,
) -> Result<TcpStream, (&'static str, String)> {
    let addrs: Vec<SocketAddr> = match dests.resolve(host, port).await {
        Ok(a) => a,
        Err(ResolveError::Forbidden(f)) => return Err(("403 Forbidden", f.to_string())),
        Err(e) => return Err(("502 Bad Gateway", e.to_string())),
    };
    let mut last = String::from("no address");
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("connecting to {a} timed out"),
        }
    }
    Err(("502 Bad Gateway", format!("cannot connect to {host}:{port}: {last}")))
}
