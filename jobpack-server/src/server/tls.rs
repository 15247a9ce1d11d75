//! TLS with rustls, and mutual TLS: with `--tls-client-ca`, client certificates signed by that CA
//! are verified in the handshake (a certificate from any other CA is refused there) and the
//! subject's CN and OU become the caller's identity.
//!
//! poem has no way to hand the peer certificate to a handler, so this module has its own
//! acceptor: it completes each handshake in a task of its own (a slow client cannot hold up
//! others), reads the verified certificate's subject, and passes it on as the connection's
//! remote address (`Addr::Custom("mtls", ...)`), which `PeerIdentity::of` reads back. Only this
//! acceptor can create such an address; a client cannot forge one.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Request};
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// The TLS flags of `jobpack serve`.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a client certificate (otherwise a token will do).
    pub require_client_cert: bool,
}

/// The subject of a verified client certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub addr: SocketAddr,
    pub common_name: Option<String>,
    pub organizational_units: Vec<String>,
}

const MTLS_ADDR: &str = "mtls";

impl PeerIdentity {
    /// The client certificate's subject of the connection `req` came on, if it had one.
    pub fn of(req: &Request) -> Option<PeerIdentity> {
        match &req.remote_addr().0 {
            Addr::Custom(MTLS_ADDR, s) => serde_json::from_str(s).ok(),
            _ => None,
        }
    }

    pub(crate) fn from_der(addr: SocketAddr, der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let text =
            |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().ok().map(str::to_owned);
        Some(PeerIdentity {
            addr,
            common_name: subject.iter_common_name().next().and_then(text),
            organizational_units: subject
                .iter_organizational_unit()
                .filter_map(text)
                .collect(),
        })
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid PEM certificate in {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The CA certificates in `ca`, as roots to check client certificates against.
fn client_roots(ca: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .with_context(|| format!("invalid CA certificate in {}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The private key named by `opts`.
fn read_key(opts: &TlsOptions) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(&opts.key)
        .with_context(|| format!("cannot read a PEM private key from {}", opts.key.display()))
}

/// The rustls configuration for `opts` (ring as the crypto provider; TLS 1.2 and 1.3).
pub fn server_config(opts: &TlsOptions) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&opts.cert)?;
    let key = read_key(opts)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?;
    let builder = match &opts.client_ca {
        Some(ca) => {
            let v = WebPkiClientVerifier::builder_with_provider(client_roots(ca)?, provider);
            let v = if opts.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().context("bad client CA")?)
        }
        None if opts.require_client_cert => {
            anyhow::bail!("--tls-require-client-cert needs --tls-client-ca")
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the key {} does not fit the certificate {}",
            opts.key.display(),
            opts.cert.display()
        )
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The rustls configuration of the gRPC door: the same certificate and client CA as the HTTP
/// door, TLS 1.3 only, a client certificate required (its CN the user, its OU the role), ALPN h2.
pub fn grpc_server_config(opts: &TlsOptions) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = opts
        .client_ca
        .as_ref()
        .context("--grpc-listen needs --tls-client-ca (the door takes client certificates)")?;
    let verifier = WebPkiClientVerifier::builder_with_provider(client_roots(ca)?, provider.clone())
        .build()
        .context("bad client CA")?;
    let key = read_key(opts)?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&opts.cert)?, key)
        .context("the key does not fit the certificate")?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

type Accepted = (TlsStream<TcpStream>, LocalAddr, RemoteAddr, Scheme);

/// A TLS listener for poem whose connections carry the client certificate's subject.
pub struct TlsAcceptor {
    local: SocketAddr,
    rx: mpsc::Receiver<Accepted>,
    task: tokio::task::JoinHandle<()>,
}

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsAcceptor {
    pub async fn bind(addr: SocketAddr, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel::<Accepted>(64);
        let tls = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    break;
                }
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::warn!("TLS handshake with {peer} refused: {e}");
                                return;
                            }
                            Err(_) => return,
                        };
                    let identity = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| PeerIdentity::from_der(peer, c));
                    let remote = match identity.and_then(|i| serde_json::to_string(&i).ok()) {
                        Some(json) => Addr::Custom(MTLS_ADDR, Cow::Owned(json)),
                        None => Addr::SocketAddr(peer),
                    };
                    let sent = tx
                        .send((
                            stream,
                            LocalAddr(Addr::SocketAddr(local)),
                            RemoteAddr(remote),
                            Scheme::HTTPS,
                        ))
                        .await;
                    if sent.is_err() {
                        tracing::debug!(%peer, "the server stopped accepting: a TLS connection closed unanswered");
                    }
                });
            }
        });
        Ok(TlsAcceptor { local, rx, task })
    }
}

impl Drop for TlsAcceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Acceptor for TlsAcceptor {
    type Io = TlsStream<TcpStream>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![LocalAddr(Addr::SocketAddr(self.local))]
    }

    async fn accept(&mut self) -> std::io::Result<Accepted> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| std::io::Error::other("the TLS listener stopped"))
    }
}
