//! Outbound request safety (spec §6.5 SSRF): model, tool and memory HTTP clients refuse
//! loopback, link-local, cloud-metadata, unspecified, CGNAT, private (RFC 1918 / ULA) and
//! other reserved addresses unless the resource opts in.
//!
//! The check holds where the connection is made, not only on the URL text:
//!
//! * [`guarded_client`] builds a `reqwest::Client` whose DNS resolver ([`GuardedResolver`])
//!   drops every resolved address the [`OutboundGuard`] refuses (a host name resolving to
//!   `127.0.0.1` fails), and whose redirect policy checks every redirect target;
//! * literal IP addresses never reach a resolver, so callers check the URL itself with
//!   [`OutboundGuard::check_url`] before sending (the model router and the tool executors do).
//!
//! # Opting in
//!
//! * Model traffic: `ModelEndpoint.spec.allowPrivate` (default `true` for `ollama`, whose
//!   default base URL is `http://127.0.0.1:11434`, else `false`).
//! * Tools: the runtime-level `ToolRuntimeConfig::allow_private_endpoints` (the Tool kind has
//!   no per-resource field; it is an operator switch, not something a manifest can set).
//!
//! Opting in allows every address except cloud metadata (`169.254.169.254`,
//! `fd00:ec2::254`), which is always refused. This is one definition of "private" for the
//! whole runtime; the reference keeps loopback blocked for tools even with `allowPrivate`,
//! which leaves no way to reach a tool sidecar on the same host.
//!
//! ```
//! use orloj_runtime::outbound::{AddressClass, OutboundGuard};
//!
//! let guard = OutboundGuard::public_only("set spec.allowPrivate: true on the ModelEndpoint");
//! assert!(guard.check_url("https://93.184.215.14/v1").is_ok());
//! let err = guard.check_url("http://10.1.2.3:8080/v1").unwrap_err();
//! assert_eq!(err.class, AddressClass::Private);
//! assert!(err.to_string().contains("set spec.allowPrivate: true"));
//! assert!(OutboundGuard::allow_private().check_url("http://10.1.2.3/").is_ok());
//! ```

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Most redirects a guarded client follows (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// What kind of address an IP is, for the outbound guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Routable on the internet.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10` (metadata addresses excepted).
    LinkLocal,
    /// Cloud instance metadata: `169.254.169.254`, `fd00:ec2::254`. Never allowed.
    Metadata,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    Cgnat,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) and unique-local `fc00::/7`.
    Private,
    /// Multicast, broadcast and other reserved ranges.
    Reserved,
}

impl AddressClass {
    /// Human-readable name used in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Cgnat => "carrier-grade NAT (100.64.0.0/10)",
            AddressClass::Private => "private-network",
            AddressClass::Reserved => "reserved (multicast/broadcast)",
        }
    }
}

const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Classifies `ip`; IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are classified as IPv4.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip == METADATA_V4 {
        AddressClass::Metadata
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 0 {
        AddressClass::Unspecified
    } else if a == 100 && (b & 0xc0) == 64 {
        AddressClass::Cgnat
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let seg0 = ip.segments()[0];
    if ip == METADATA_V6 {
        AddressClass::Metadata
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if (seg0 & 0xffc0) == 0xfe80 {
        AddressClass::LinkLocal
    } else if (seg0 & 0xfe00) == 0xfc00 {
        AddressClass::Private
    } else if ip.is_multicast() {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// An address the guard refused. The message names the address, its class and how to opt in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct BlockedAddress {
    /// The host as written (a name or the literal address).
    pub host: String,
    /// The refused address.
    pub ip: IpAddr,
    /// Why it is refused.
    pub class: AddressClass,
    opt_in: Option<Arc<str>>,
}

impl BlockedAddress {
    fn render(&self) -> String {
        let target = if self.host == self.ip.to_string() {
            format!("{} is a {} address", self.ip, self.class.describe())
        } else {
            format!(
                "{} resolves to {}, a {} address",
                self.host,
                self.ip,
                self.class.describe()
            )
        };
        match (&self.opt_in, self.class) {
            (_, AddressClass::Metadata) => {
                format!("{target}: outbound requests to it are always refused")
            }
            (Some(hint), _) => format!("{target}: outbound requests to it are refused ({hint})"),
            (None, _) => format!("{target}: outbound requests to it are refused"),
        }
    }
}

/// The outbound address policy of one resource (or one runtime).
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundGuard {
    allow_private: bool,
    opt_in: Option<Arc<str>>,
}

impl fmt::Debug for OutboundGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundGuard")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl OutboundGuard {
    /// Public addresses only; `opt_in` tells the user how to allow the others (it ends up in
    /// the error message, e.g. "set spec.allowPrivate: true on the ModelEndpoint").
    pub fn public_only(opt_in: &str) -> Self {
        Self {
            allow_private: false,
            opt_in: Some(Arc::from(format!("to allow it, {opt_in}"))),
        }
    }

    /// Every address except cloud metadata (the resource opted in).
    pub fn allow_private() -> Self {
        Self {
            allow_private: true,
            opt_in: None,
        }
    }

    /// [`allow_private`](Self::allow_private) when `allow`, else
    /// [`public_only`](Self::public_only) with `opt_in`.
    pub fn new(allow: bool, opt_in: &str) -> Self {
        if allow {
            Self::allow_private()
        } else {
            Self::public_only(opt_in)
        }
    }

    /// Whether non-public addresses (but metadata) are allowed.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Checks one address reached through `host`.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), BlockedAddress> {
        let class = classify(ip);
        let allowed = match class {
            AddressClass::Public => true,
            AddressClass::Metadata => false,
            _ => self.allow_private,
        };
        if allowed {
            Ok(())
        } else {
            Err(BlockedAddress {
                host: host.to_string(),
                ip,
                class,
                opt_in: self.opt_in.clone(),
            })
        }
    }

    /// Checks the host of `url` when it is a literal IP address (names are checked by the
    /// [`GuardedResolver`] when they resolve). Unparsable URLs pass: sending them fails anyway.
    pub fn check_url(&self, url: &str) -> Result<(), BlockedAddress> {
        match reqwest::Url::parse(url.trim()) {
            Ok(parsed) => self.check_parsed_url(&parsed),
            Err(_) => Ok(()),
        }
    }

    fn check_parsed_url(&self, url: &reqwest::Url) -> Result<(), BlockedAddress> {
        let host = url.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(&ip.to_string(), ip),
            Err(_) => Ok(()),
        }
    }
}

/// A DNS resolver that resolves with the system resolver and keeps only the addresses the
/// guard allows; a name with none left fails with a [`BlockedAddress`] error.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: OutboundGuard,
}

impl GuardedResolver {
    /// A resolver enforcing `guard`.
    pub fn new(guard: OutboundGuard) -> Self {
        Self { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let mut allowed = Vec::with_capacity(resolved.len());
            for addr in resolved {
                match guard.check_ip(&host, addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(e) => {
                        first_refusal.get_or_insert(e);
                    }
                }
            }
            if allowed.is_empty()
                && let Some(refusal) = first_refusal
            {
                return Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A client builder enforcing `guard` at connect time (resolver) and on every redirect; add
/// timeouts and the like, then `build()`. Installs the ring TLS provider if none is installed.
pub fn guarded_builder(guard: OutboundGuard) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redirect_guard = guard.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("stopped after {MAX_REDIRECTS} redirects"));
        }
        match redirect_guard.check_parsed_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(blocked) => attempt.error(blocked),
        }
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver::new(guard)))
        .redirect(redirects)
}

/// A client enforcing `guard`; see [`guarded_builder`].
pub fn guarded_client(guard: OutboundGuard) -> Result<reqwest::Client, reqwest::Error> {
    guarded_builder(guard).build()
}

/// The [`BlockedAddress`] behind a failed request, if the guard caused the failure.
pub fn blocked_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BlockedAddress> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(blocked) = e.downcast_ref::<BlockedAddress>() {
            return Some(blocked);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINT: &str = "set spec.allowPrivate: true on the ModelEndpoint";

    #[test]
    fn classifies_special_ranges() {
        let cases = [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("169.254.10.1", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("169.254.169.254", AddressClass::Metadata),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("100.64.0.1", AddressClass::Cgnat),
            ("100.127.255.254", AddressClass::Cgnat),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.5.5", AddressClass::Private),
            ("192.168.1.2", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("224.0.0.1", AddressClass::Reserved),
            ("255.255.255.255", AddressClass::Reserved),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::Metadata),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("93.184.215.14", AddressClass::Public),
            ("100.128.0.1", AddressClass::Public),
            ("172.32.0.1", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
        ];
        for (text, class) in cases {
            let ip: IpAddr = text.parse().expect(text);
            assert_eq!(classify(ip), class, "{text}");
        }
    }

    #[test]
    fn refuses_non_public_literals_with_a_clear_message() {
        let guard = OutboundGuard::public_only(HINT);
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "http://169.254.1.1/",
            "http://0.0.0.0:80/",
            "http://100.64.1.1/",
            "http://10.0.0.1/",
            "http://192.168.0.10/",
            "http://[fd00::5]/",
            "http://[::ffff:127.0.0.1]/",
            "https://[fe80::1]:8443/",
        ] {
            let err = guard.check_url(url).expect_err(url);
            let msg = err.to_string();
            assert!(msg.contains(&err.ip.to_string()), "{msg}");
            assert!(msg.contains(HINT), "{msg}");
        }
        let err = guard
            .check_url("http://127.0.0.1:9/x")
            .expect_err("loopback");
        assert_eq!(
            err.to_string(),
            format!(
                "127.0.0.1 is a loopback address: outbound requests to it are refused (to allow it, {HINT})"
            )
        );
        for url in [
            "https://93.184.215.14/v1",
            "https://[2606:4700::1111]/",
            "https://api.openai.com/v1",
            "http://localhost:1/",
            "not a url",
        ] {
            assert!(guard.check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn opting_in_allows_all_but_metadata() {
        let guard = OutboundGuard::allow_private();
        for url in [
            "http://127.0.0.1:9/",
            "http://10.0.0.1/",
            "http://100.64.0.1/",
            "http://[fd00::5]/",
        ] {
            assert!(guard.check_url(url).is_ok(), "{url}");
        }
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            let err = guard.check_url(url).expect_err(url);
            assert_eq!(err.class, AddressClass::Metadata);
            assert!(err.to_string().contains("always refused"), "{err}");
        }
    }

    async fn local_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        port
    }

    #[tokio::test]
    async fn host_names_are_checked_where_they_resolve() {
        let port = local_server().await;
        let url = format!("http://localhost:{port}/");
        let guard = OutboundGuard::public_only(HINT);
        assert!(guard.check_url(&url).is_ok(), "the URL text alone passes");

        let strict = guarded_client(guard).expect("client");
        let err = strict.get(&url).send().await.expect_err("refused");
        let blocked = blocked_cause(&err).expect("the guard refused it");
        assert_eq!(blocked.host, "localhost");
        assert!(matches!(blocked.class, AddressClass::Loopback), "{blocked}");
        assert!(
            blocked.to_string().starts_with("localhost resolves to "),
            "{blocked}"
        );

        let open = guarded_client(OutboundGuard::allow_private()).expect("client");
        let body = open
            .get(&url)
            .send()
            .await
            .expect("allowed")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "hello");
    }

    #[tokio::test]
    async fn redirects_to_refused_addresses_are_not_followed() {
        let target = local_server().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let to = format!("http://169.254.169.254:{target}/");
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let to = to.clone();
                async move { axum::response::Redirect::temporary(&to) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = guarded_client(OutboundGuard::allow_private()).expect("client");
        let err = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect_err("redirect to metadata");
        let blocked = blocked_cause(&err).expect("the guard refused the redirect");
        assert_eq!(blocked.class, AddressClass::Metadata);
    }
}
