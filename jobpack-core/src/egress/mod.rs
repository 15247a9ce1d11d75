//! Where the packager may connect for its caller: a destination policy applied to every data
//! download and git fetch, **after DNS resolution** and again **on every redirect**.
//!
//! A service that fetches URLs for strangers must not become their way into its own network: by
//! default [`Destinations::public`] refuses loopback, private (RFC 1918, unique-local), shared
//! (CGNAT), link-local (cloud metadata at 169.254.169.254), multicast, broadcast, reserved and
//! unspecified addresses, IPv4-mapped or not, unless an admin allows a CIDR or a host name.
//! [`Destinations::any`] allows everything (the command line, acting for its own user).
//!
//! How it is enforced, so that a name that resolves differently the second time (DNS rebinding)
//! gains nothing:
//! - HTTP downloads: reqwest resolves through [`Destinations::resolver`], which drops forbidden
//!   addresses at connect time (every connection, redirects included); IP literals, which reqwest
//!   does not resolve, are checked before the request and by the redirect policy.
//! - git over http(s): libgit2 is pointed at [`EgressProxy`], a local CONNECT / absolute-form
//!   proxy that resolves, checks and connects to the checked address itself, one request per
//!   connection.
//! - git over `git://` and `ssh://`: the host is resolved and checked before the fetch (libgit2
//!   cannot be proxied there); SECURITY.md names the rebinding window this leaves.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

mod proxy;
pub use proxy::{EgressProxy, http_via};

/// A refused destination.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.explain("--allow-fetch-from"))]
pub struct Forbidden {
    pub host: String,
    pub addr: String,
    pub why: &'static str,
}

impl Forbidden {
    /// What was refused, and the server flag (`flag`) with which an admin can allow it.
    pub fn explain(&self, flag: &str) -> String {
        format!(
            "destination {} ({}) is not allowed: {}; an admin can allow it with {flag}",
            self.host, self.addr, self.why
        )
    }
}

/// The policy refusal inside an error (a transfer's, a connection's), if that is what it is.
pub fn forbidden_in(e: &(dyn std::error::Error + 'static)) -> Option<Forbidden> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(f) = c.downcast_ref::<Forbidden>() {
            return Some(f.clone());
        }
        if let Some(ResolveError::Forbidden(f)) = c.downcast_ref::<ResolveError>() {
            return Some(f.clone());
        }
        cur = c.source();
    }
    None
}

/// Which destinations may be reached.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// `false`: everything is allowed.
    restricted: bool,
    allow_nets: Vec<IpNet>,
    allow_hosts: Vec<String>,
}

impl Destinations {
    /// Everything, loopback included (a command-line user fetching for themselves).
    pub fn any() -> Destinations {
        Destinations::default()
    }

    /// Public addresses only, no exception (a service's default).
    pub fn public_only() -> Destinations {
        Destinations {
            restricted: true,
            ..Destinations::default()
        }
    }

    /// Public addresses only, plus `allow`: CIDRs (`10.1.0.0/16`, `127.0.0.1/32`), single
    /// addresses, or host names (matched exactly, case-insensitively, before resolution).
    pub fn public(allow: &[String]) -> Result<Destinations, String> {
        let mut d = Destinations::public_only();
        for a in allow.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            if let Ok(n) = a.parse::<IpNet>() {
                d.allow_nets.push(n);
            } else if let Ok(ip) = a.parse::<IpAddr>() {
                d.allow_nets.push(IpNet::from(ip));
            } else if a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && !a.starts_with('-')
            {
                d.allow_hosts.push(a.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{a:?} is neither a CIDR (10.0.0.0/8), an address nor a host name"
                ));
            }
        }
        Ok(d)
    }

    /// Whether anything is refused at all.
    pub fn is_restricted(&self) -> bool {
        self.restricted
    }

    fn host_allowed(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow_hosts.contains(&h)
    }

    /// Checks one resolved address of `host`.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Forbidden> {
        if !self.restricted || self.host_allowed(host) {
            return Ok(());
        }
        let ip = canonical(ip);
        if self.allow_nets.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match internal(ip) {
            None => Ok(()),
            Some(why) => Err(Forbidden {
                host: host.to_owned(),
                addr: ip.to_string(),
                why,
            }),
        }
    }

    /// Resolves `host:port` and keeps the allowed addresses; every address forbidden is an
    /// error naming the first. A literal address is checked as it is.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.keep_allowed(host, [SocketAddr::new(ip, port)]);
        }
        let addrs = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| ResolveError::Dns(host.to_owned(), e))?;
        self.keep_allowed(host, addrs)
    }

    /// [`Destinations::resolve`] for blocking code (the git stage), answering only whether the
    /// host is refused: a name that does not resolve is left to the fetch, which reports it.
    pub fn check_blocking(&self, host: &str, port: u16) -> Result<(), Forbidden> {
        if !self.restricted {
            return Ok(());
        }
        use std::net::ToSocketAddrs;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match (bare, port).to_socket_addrs() {
                Ok(a) => a.collect(),
                Err(_) => return Ok(()),
            },
        };
        match self.keep_allowed(host, addrs) {
            Err(ResolveError::Forbidden(f)) => Err(f),
            _ => Ok(()),
        }
    }

    /// The allowed ones of `host`'s addresses; none allowed is the first refusal (or "no
    /// address" when there was none).
    fn keep_allowed(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let mut first_refusal = None;
        let ok: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check(host, a.ip()) {
                Ok(()) => true,
                Err(f) => {
                    first_refusal.get_or_insert(f);
                    false
                }
            })
            .collect();
        match (ok.is_empty(), first_refusal) {
            (true, Some(f)) => Err(ResolveError::Forbidden(f)),
            (true, None) => Err(ResolveError::Dns(
                host.to_owned(),
                std::io::Error::other("no address"),
            )),
            _ => Ok(ok),
        }
    }

    /// Checks the host of a URL before anything is sent (a literal is checked, a name resolved).
    /// An unresolvable name is not refused here: the fetch reports it.
    pub async fn check_url(&self, url: &url::Url) -> Result<(), Forbidden> {
        if !self.restricted {
            return Ok(());
        }
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(0);
        match self.resolve(host, port).await {
            Err(ResolveError::Forbidden(f)) => Err(f),
            _ => Ok(()),
        }
    }

    /// A reqwest resolver that resolves with the system and drops forbidden addresses.
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn reqwest::dns::Resolve> {
        Arc::new(Resolver(self.clone()))
    }

    /// A reqwest redirect policy: at most 10 hops, each literal address checked (names are
    /// checked by the resolver when the hop connects).
    pub fn redirect_policy(self: &Arc<Self>) -> reqwest::redirect::Policy {
        let me = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("too many redirects (10)");
            }
            let literal = attempt.url().host().and_then(|h| match h {
                url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
                url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
                url::Host::Domain(_) => None,
            });
            if let Some(ip) = literal
                && let Err(f) = me.check(attempt.url().host_str().unwrap_or_default(), ip)
            {
                return attempt.error(f);
            }
            attempt.follow()
        })
    }
}

/// The host and port a git URL connects to (`None` for local paths and `file:`).
pub fn remote_host(url: &str) -> Option<(String, u16)> {
    if let Ok(u) = url::Url::parse(url) {
        let port = u.port().unwrap_or(match u.scheme() {
            "http" => 80,
            "https" => 443,
            "git" => 9418,
            "ssh" | "git+ssh" | "ssh+git" => 22,
            _ => return None,
        });
        return u.host_str().map(|h| (h.to_owned(), port));
    }
    // scp-like: [user@]host:path
    let (before, _) = url.split_once(':')?;
    let host = before.rsplit('@').next()?;
    (!host.is_empty() && !host.contains('/')).then(|| (host.to_owned(), 22))
}

impl Destinations {
    /// Checks every destination a job names (its git remote, each data URL) before it is
    /// accepted: `Err((field, refusal))` for the first forbidden one. Names that do not resolve
    /// now are left to the fetch, which checks again at every connection.
    pub async fn check_job(&self, job: &crate::Job) -> Result<(), (String, Forbidden)> {
        if !self.restricted {
            return Ok(());
        }
        if let Some(src) = &job.source
            && let Some((host, port)) = remote_host(&src.url)
            && let Err(ResolveError::Forbidden(f)) = self.resolve(&host, port).await
        {
            return Err(("git_url".into(), f));
        }
        for (i, d) in job.data.iter().enumerate() {
            self.check_url(&d.url)
                .await
                .map_err(|f| (format!("data[{i}].url"), f))?;
        }
        Ok(())
    }
}

/// Why a destination could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error("cannot resolve {0}")]
    Dns(String, #[source] std::io::Error),
}

struct Resolver(Arc<Destinations>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let d = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = d
                .resolve(&host, 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Why an address is not public, if it is not.
fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_private() {
                Some("a private address")
            } else if a.is_link_local() {
                Some("link-local (cloud metadata lives here)")
            } else if a.is_multicast() {
                Some("multicast")
            } else if a.is_broadcast() {
                Some("broadcast")
            } else if o[0] == 0 {
                Some("unspecified (this network)")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared address space (CGNAT)")
            } else if o[0] >= 240 {
                Some("reserved")
            } else if (o[0], o[1], o[2]) == (192, 0, 0) || (o[0] == 198 && (o[1] & 0xfe) == 18) {
                Some("reserved for protocols and benchmarks")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_unspecified() {
                Some("unspecified")
            } else if a.is_multicast() {
                Some("multicast")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("a unique-local (private) address")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                Some("NAT64 (could reach an internal IPv4 address)")
            } else if s[0] == 0x2002 {
                Some("6to4 (could reach an internal IPv4 address)")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let d = Destinations::public(&[]).unwrap();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(d.check("h", a.parse().unwrap()).is_err(), "{a}");
        }
        for a in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"] {
            assert!(d.check("h", a.parse().unwrap()).is_ok(), "{a}");
        }
        let d = Destinations::public(&["127.0.0.0/8".into(), "files.internal".into()]).unwrap();
        assert!(d.check("x", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(d.check("x", "10.0.0.1".parse().unwrap()).is_err());
        assert!(
            d.check("FILES.internal", "10.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            Destinations::any()
                .check("x", "127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(Destinations::public(&["not a host!".into()]).is_err());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let d = Destinations::public(&[]).unwrap();
        let e = d.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(e, ResolveError::Forbidden(_)), "{e}");
        let u = url::Url::parse("http://localhost:1/x").unwrap();
        assert!(d.check_url(&u).await.is_err());
    }
}
