//! A local HTTP proxy through which libgit2 reaches http(s) remotes, so that git fetches obey the
//! same [`Destinations`] as downloads: libgit2 cannot be given a resolver, but it can be given a
//! proxy. The proxy resolves the target itself, checks every address, and connects to a checked
//! one, so a name that resolves to a public address when checked and to a private one when
//! connected (DNS rebinding) cannot slip through.
//!
//! It takes `CONNECT host:port` (https; the TLS session is end to end between libgit2 and the
//! remote), absolute-form requests (`GET http://host/path HTTP/1.1`), and, for plain http
//! remotes, origin-form requests under [`HTTP_PREFIX`] (`GET /.jobpack-http/host:port/path`):
//! libgit2 does not send plain http through a proxy (it connects to the remote and only writes
//! the request in proxy form), so the packager points such a remote at this proxy instead (see
//! [`EgressProxy::http_url`]). Forwarded requests get `Connection: close`, so each is checked on
//! its own connection. It listens on
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

    /// The URL through which libgit2 reaches the plain-http remote `remote`: see [`http_via`].
    pub fn http_url(&self, remote: &str) -> Option<String> {
        http_via(&self.url, remote)
    }
}

/// The URL through which libgit2 reaches the plain-http remote `remote` via the proxy at `proxy`
/// (as if the proxy were the server); `None` for anything but an `http://` URL without
/// credentials.
pub fn http_via(proxy: &str, remote: &str) -> Option<String> {
    {
        let u = url::Url::parse(remote).ok()?;
        if u.scheme() != "http" || !u.username().is_empty() || u.password().is_some() {
            return None;
        }
        let host = u.host_str()?;
        let port = u.port_or_known_default()?;
        let mut path = u.path().to_owned();
        if let Some(q) = u.query() {
            path = format!("{path}?{q}");
        }
        Some(format!("{proxy}{HTTP_PREFIX}{host}:{port}{path}"))
    }
}

/// The path prefix of plain-http remotes reached through the proxy.
pub const HTTP_PREFIX: &str = "/.jobpack-http/";

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
        return reply(
            &mut sock,
            "400 Bad Request",
            "incomplete or oversized request head",
        )
        .await;
    };
    let rest = head.split_off(end);
    let Ok(text) = std::str::from_utf8(&head) else {
        return reply(
            &mut sock,
            "400 Bad Request",
            "the request head is not UTF-8",
        )
        .await;
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
    // Origin form under the prefix (`/.jobpack-http/host:port/path`), or absolute form
    // (`http://host[:port]/path`).
    let (host, port, path) = if let Some(rest) = target.strip_prefix(HTTP_PREFIX) {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let Some((host, port)) = authority
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        else {
            return reply(
                &mut sock,
                "400 Bad Request",
                "expected host:port after the prefix",
            )
            .await;
        };
        (host, port, path.to_owned())
    } else {
        let Ok(url) = url::Url::parse(target) else {
            return reply(
                &mut sock,
                "400 Bad Request",
                "expected an absolute http:// URL",
            )
            .await;
        };
        if url.scheme() != "http" {
            return reply(
                &mut sock,
                "400 Bad Request",
                "only http:// is proxied in the clear",
            )
            .await;
        }
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        (
            url.host_str().unwrap_or_default().to_owned(),
            url.port_or_known_default().unwrap_or(80),
            path,
        )
    };
    let mut up = match connect_checked(dests, &host, port).await {
        Ok(s) => s,
        Err((status, why)) => return reply(&mut sock, status, &why).await,
    };
    let mut out = format!("{method} {path} {version}\r\n");
    out.push_str(&format!("Host: {host}:{port}\r\n"));
    for h in headers {
        let name = h.split_once(':').map(|(k, _)| k.trim()).unwrap_or(h);
        if name.eq_ignore_ascii_case("proxy-authorization")
            || name.eq_ignore_ascii_case("proxy-connection")
            || name.eq_ignore_ascii_case("connection")
            || name.eq_ignore_ascii_case("host")
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
    Err((
        "502 Bad Gateway",
        format!("cannot connect to {host}:{port}: {last}"),
    ))
}
