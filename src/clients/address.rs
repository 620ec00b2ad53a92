//! Which hosts a URL from outside may make us (or NCA) reach. A track URL comes from a
//! webhook or the base's Music field, so without this check anyone who can write either
//! could make the track check probe our own network or a cloud metadata service (SSRF).
//!
//! Addresses are judged after the URL parser normalised them (`http://2130706433/`,
//! `http://0x7f.1/` and `http://0177.0.0.1/` are all 127.0.0.1), and names after they were
//! resolved, every address of the answer: one refused address refuses the host, since
//! the connection could go to any of them.

#[cfg(test)]
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

/// The kind of address a host is, as far as reaching it from here is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    Public,
    Loopback,
    /// RFC 1918 and unique local IPv6 (fc00::/7).
    Private,
    /// 100.64.0.0/10: carrier-grade NAT, also used inside cloud networks.
    SharedCgnat,
    /// 169.254/16, fe80::/10: a machine's own link, where metadata services live.
    LinkLocal,
    /// 0.0.0.0/8, ::: connecting there reaches this machine on Linux.
    Unspecified,
    /// Multicast and broadcast: no single host answers there.
    NotUnicast,
    /// A cloud provider's instance metadata service (credentials of the machine).
    Metadata,
}

impl Range {
    fn describe(self) -> &'static str {
        match self {
            Range::Public => "a public address",
            Range::Loopback => "a loopback address",
            Range::Private => "a private network address",
            Range::SharedCgnat => "a carrier-grade NAT address (100.64.0.0/10)",
            Range::LinkLocal => "a link-local address",
            Range::Unspecified => "an unspecified address",
            Range::NotUnicast => "a multicast or broadcast address",
            Range::Metadata => "a cloud metadata address",
        }
    }
}

/// getaddrinfo has no deadline of its own, and a resolver that does not answer must not
/// hold a track check for long.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// For a URL handed on to NCA the deadline is far shorter: the lookup sits between the mix
/// being marked started and its request going out, so every second it takes is a second
/// in which a crash leaves a call that never left looking interrupted (and spends the
/// job's one re-submission). A name that does not resolve in time is handed on, as one that
/// does not resolve at all: NCA resolves it. Seen here: a resolver that answers one query
/// in 2 ms answered 25 concurrent ones (a burst of mixes) only at getaddrinfo's 5 s
/// timeout, and the faults bench then lost videos to interrupted re-submissions.
const HAND_ON_LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);

/// Names of metadata services that resolve only inside their cloud: refused by name,
/// whatever they resolve to here (or if they do not resolve here at all).
const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata.goog"];

const METADATA_V4: &[Ipv4Addr] = &[
    // AWS, GCP, Azure, OpenStack, DigitalOcean...
    Ipv4Addr::new(169, 254, 169, 254),
    // AWS's IPv4 alternative for Nitro instances.
    Ipv4Addr::new(169, 254, 170, 2),
    // Alibaba Cloud.
    Ipv4Addr::new(100, 100, 100, 200),
];

/// AWS's IPv6 metadata endpoint.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

pub(crate) fn classify(ip: IpAddr) -> Range {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Range {
    let [a, b, ..] = ip.octets();
    if METADATA_V4.contains(&ip) {
        Range::Metadata
    } else if ip.is_loopback() {
        Range::Loopback
    } else if a == 0 {
        Range::Unspecified
    } else if ip.is_private() {
        Range::Private
    } else if a == 100 && (b & 0xc0) == 64 {
        Range::SharedCgnat
    } else if ip.is_link_local() {
        Range::LinkLocal
    } else if ip.is_multicast() || ip.is_broadcast() {
        Range::NotUnicast
    } else {
        Range::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Range {
    let seg = ip.segments();
    // An IPv4 address written as IPv6 reaches the IPv4 host: judge that one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and the NAT64 well-known prefix
    // (64:ff9b::/96) embed an IPv4 address the same way.
    let embedded = (seg[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
        || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if embedded {
        let [.., hi, lo] = seg;
        return classify_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    if ip == METADATA_V6 {
        Range::Metadata
    } else if ip.is_loopback() {
        Range::Loopback
    } else if ip.is_unspecified() {
        Range::Unspecified
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        Range::Private
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        Range::LinkLocal
    } else if ip.is_multicast() {
        Range::NotUnicast
    } else {
        Range::Public
    }
}

/// Whose request a URL is for, which decides what it may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// We fetch it ourselves (the track check). `allow_private` lets loopback, private
    /// and CGNAT ranges through for sandboxes and tests whose hosts are on 127.0.0.1;
    /// metadata, link-local and unspecified addresses stay refused.
    Fetch { allow_private: bool },
    /// We hand it to NCA, which fetches it from its own network: a private address may
    /// well be where its media is (a bucket beside it), but link-local and metadata
    /// addresses would be NCA's own machine's credentials.
    HandOn,
}

impl Rule {
    fn lookup_timeout(self) -> Duration {
        match self {
            Rule::Fetch { .. } => LOOKUP_TIMEOUT,
            Rule::HandOn => HAND_ON_LOOKUP_TIMEOUT,
        }
    }

    fn refuses(self, range: Range) -> bool {
        match (self, range) {
            (_, Range::Public) => false,
            (_, Range::Metadata | Range::LinkLocal) => true,
            (Rule::HandOn, _) => false,
            (
                Rule::Fetch { allow_private },
                Range::Loopback | Range::Private | Range::SharedCgnat,
            ) => !allow_private,
            (Rule::Fetch { .. }, Range::Unspecified | Range::NotUnicast) => true,
        }
    }
}

/// A host we will not reach, and why: the message names the host, never the rest of the
/// URL (a signed URL's query is a credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) host: String,
    pub(crate) why: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host {} {}", self.host, self.why)
    }
}

/// Maps a host name to its addresses. The seam lets tests give names addresses (there is
/// no DNS where they run) and makes the check and the connection use the same answer.
pub(crate) trait Resolver: Send + Sync {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The system's resolver (getaddrinfo, through tokio).
pub(crate) struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), port)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

pub(crate) fn system() -> Arc<dyn Resolver> {
    Arc::new(SystemResolver)
}

/// Fixed answers; any other name does not resolve.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct StaticResolver(pub HashMap<String, Vec<IpAddr>>);

#[cfg(test)]
impl StaticResolver {
    pub(crate) fn with(mut self, host: &str, addrs: &[&str]) -> Self {
        let ips = addrs.iter().map(|a| a.parse().expect("an IP address"));
        self.0.insert(host.to_owned(), ips.collect());
        self
    }
}

#[cfg(test)]
impl Resolver for StaticResolver {
    fn lookup(&self, host: &str, _port: u16) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let answer = self.0.get(host).cloned().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{host} does not resolve"))
        });
        Box::pin(async move { answer })
    }
}

/// What a URL's host was found to be when it was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vetted {
    /// The addresses to connect to (the port is the URL's).
    Addresses(Vec<SocketAddr>),
    /// The name did not resolve here, for the reason given.
    Unresolved(String),
}

/// Judges `url`'s host under `rule`: a literal address as it is, a name by every address
/// it resolves to.
pub(crate) async fn vet(
    url: &url::Url,
    rule: Rule,
    resolver: &dyn Resolver,
) -> Result<Vetted, Refused> {
    let port = url.port_or_known_default().unwrap_or(80);
    let refuse = |host: &str, why: String| Refused {
        host: host.to_owned(),
        why,
    };
    let ip = match url.host() {
        None => return Err(refuse("(none)", "is missing".into())),
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(name)) => {
            let bare = name.trim_end_matches('.').to_ascii_lowercase();
            if METADATA_NAMES.contains(&bare.as_str()) {
                return Err(refuse(name, "is a cloud metadata service's name".into()));
            }
            let deadline = rule.lookup_timeout();
            let addrs = match tokio::time::timeout(deadline, resolver.lookup(&bare, port)).await {
                Ok(Ok(a)) if !a.is_empty() => a,
                Ok(Ok(_)) => return Ok(Vetted::Unresolved(format!("{name} has no address"))),
                Ok(Err(e)) => return Ok(Vetted::Unresolved(format!("{name}: {e}"))),
                Err(_) => {
                    return Ok(Vetted::Unresolved(format!(
                        "{name}: no answer from the resolver within {} ms",
                        deadline.as_millis()
                    )));
                }
            };
            for ip in &addrs {
                let range = classify(*ip);
                if rule.refuses(range) {
                    return Err(refuse(
                        name,
                        format!("resolves to {ip}, {}", range.describe()),
                    ));
                }
            }
            let addrs = addrs.into_iter().map(|ip| SocketAddr::new(ip, port));
            return Ok(Vetted::Addresses(addrs.collect()));
        }
    };
    let range = classify(ip);
    if rule.refuses(range) {
        return Err(refuse(&ip.to_string(), format!("is {}", range.describe())));
    }
    Ok(Vetted::Addresses(vec![SocketAddr::new(ip, port)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_ranges() {
        for (a, r) in [
            ("8.8.8.8", Range::Public),
            ("127.0.0.1", Range::Loopback),
            ("127.255.0.9", Range::Loopback),
            ("10.1.2.3", Range::Private),
            ("172.16.0.1", Range::Private),
            ("172.31.255.255", Range::Private),
            ("172.32.0.1", Range::Public),
            ("192.168.1.1", Range::Private),
            ("100.64.0.1", Range::SharedCgnat),
            ("100.127.255.255", Range::SharedCgnat),
            ("100.128.0.1", Range::Public),
            ("100.63.255.255", Range::Public),
            ("169.254.1.1", Range::LinkLocal),
            ("169.254.169.254", Range::Metadata),
            ("100.100.100.200", Range::Metadata),
            ("0.0.0.0", Range::Unspecified),
            ("0.1.2.3", Range::Unspecified),
            ("224.0.0.1", Range::NotUnicast),
            ("255.255.255.255", Range::NotUnicast),
        ] {
            assert_eq!(classify(ip(a)), r, "{a}");
        }
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        for (a, r) in [
            ("2606:4700::1111", Range::Public),
            ("::1", Range::Loopback),
            ("::", Range::Unspecified),
            ("fc00::1", Range::Private),
            ("fd12:3456::1", Range::Private),
            ("fe80::1", Range::LinkLocal),
            ("febf::1", Range::LinkLocal),
            ("fec0::1", Range::Public),
            ("fd00:ec2::254", Range::Metadata),
            ("ff02::1", Range::NotUnicast),
            // Mapped, compatible and NAT64 forms reach the IPv4 host they carry.
            ("::ffff:127.0.0.1", Range::Loopback),
            ("::ffff:169.254.169.254", Range::Metadata),
            ("::ffff:10.0.0.1", Range::Private),
            ("::ffff:8.8.8.8", Range::Public),
            ("::127.0.0.1", Range::Loopback),
            ("64:ff9b::a9fe:a9fe", Range::Metadata),
            ("64:ff9b::808:808", Range::Public),
        ] {
            assert_eq!(classify(ip(a)), r, "{a}");
        }
    }

    async fn judge(url: &str, rule: Rule) -> Result<Vetted, Refused> {
        let resolver = StaticResolver::default()
            .with("cdn.example", &["93.184.216.34", "2606:2800:220:1::1"])
            .with("internal.example", &["10.0.0.5"])
            .with("rebind.example", &["93.184.216.34", "169.254.169.254"])
            .with("linklocal.example", &["fe80::1"]);
        vet(&url::Url::parse(url).unwrap(), rule, &resolver).await
    }

    const STRICT: Rule = Rule::Fetch {
        allow_private: false,
    };
    const LAX: Rule = Rule::Fetch {
        allow_private: true,
    };

    #[tokio::test]
    async fn number_forms_the_url_parser_normalises_are_judged_as_the_address() {
        for url in [
            "http://2130706433/x.mp3",
            "http://0x7f.0.0.1/x.mp3",
            "http://0177.0.0.1/x.mp3",
            "http://127.1/x.mp3",
            "http://[::ffff:7f00:1]/x.mp3",
        ] {
            let r = judge(url, STRICT).await.unwrap_err();
            assert!(r.why.contains("loopback"), "{url}: {r}");
            assert!(r.host.ends_with("127.0.0.1"), "{url}: {r}");
        }
        // 169.254.169.254 as one decimal number.
        let r = judge("http://2852039166/latest/meta-data/", LAX)
            .await
            .unwrap_err();
        assert_eq!(
            r.to_string(),
            "host 169.254.169.254 is a cloud metadata address"
        );
    }

    #[tokio::test]
    async fn the_fetch_rule_refuses_our_networks_unless_allowed_and_metadata_always() {
        for url in [
            "http://127.0.0.1/a",
            "http://10.0.0.1/a",
            "http://[fd00::1]/a",
            "http://100.64.1.1/a",
            "http://internal.example/a",
        ] {
            assert!(judge(url, STRICT).await.is_err(), "{url}");
            assert!(judge(url, LAX).await.is_ok(), "{url}");
        }
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://0.0.0.0:8080/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://linklocal.example/",
            "http://rebind.example/",
        ] {
            assert!(judge(url, LAX).await.is_err(), "{url}");
        }
        let r = judge("http://internal.example/t.mp3?sig=s", STRICT)
            .await
            .unwrap_err();
        assert_eq!(
            r.to_string(),
            "host internal.example resolves to 10.0.0.5, a private network address"
        );
        let r = judge("http://rebind.example/", STRICT).await.unwrap_err();
        assert!(r.why.contains("169.254.169.254"), "{r}");
    }

    #[tokio::test]
    async fn a_public_name_is_pinned_to_the_addresses_it_was_checked_at() {
        let v = judge("https://cdn.example/t.mp3", STRICT).await.unwrap();
        assert_eq!(
            v,
            Vetted::Addresses(vec![
                "93.184.216.34:443".parse().unwrap(),
                "[2606:2800:220:1::1]:443".parse().unwrap()
            ])
        );
        let v = judge("http://cdn.example:8080/t.mp3", STRICT)
            .await
            .unwrap();
        assert!(
            matches!(&v, Vetted::Addresses(a) if a[0].port() == 8080),
            "{v:?}"
        );
        let v = judge("http://nowhere.example/t.mp3", STRICT).await.unwrap();
        assert!(matches!(v, Vetted::Unresolved(_)), "{v:?}");
    }

    #[tokio::test]
    async fn what_is_handed_to_nca_is_refused_only_for_link_local_and_metadata() {
        for url in [
            "http://127.0.0.1/a",
            "http://10.0.0.1/a",
            "http://[fd00::1]/a",
            "http://internal.example/a",
            "http://nowhere.example/a",
        ] {
            assert!(judge(url, Rule::HandOn).await.is_ok(), "{url}");
        }
        for url in [
            "http://169.254.169.254/",
            "http://169.254.10.10/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/",
            "http://linklocal.example/",
            "http://rebind.example/",
        ] {
            assert!(judge(url, Rule::HandOn).await.is_err(), "{url}");
        }
    }

    struct Silent;

    impl Resolver for Silent {
        fn lookup(&self, _: &str, _: u16) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn a_resolver_that_does_not_answer_leaves_the_name_unresolved_in_time() {
        let url = url::Url::parse("http://media.example/v.mp4").unwrap();
        let started = std::time::Instant::now();
        let v = vet(&url, Rule::HandOn, &Silent).await.unwrap();
        assert!(
            matches!(&v, Vetted::Unresolved(why) if why.contains("no answer")),
            "{v:?}"
        );
        assert!(
            started.elapsed() < HAND_ON_LOOKUP_TIMEOUT + Duration::from_millis(500),
            "a URL handed on to NCA waits a quarter second at most: {:?}",
            started.elapsed()
        );
        let fetch = std::time::Instant::now();
        let v = vet(
            &url,
            Rule::Fetch {
                allow_private: false,
            },
            &Silent,
        )
        .await;
        assert!(matches!(&v, Ok(Vetted::Unresolved(_))), "{v:?}");
        assert!(fetch.elapsed() < LOOKUP_TIMEOUT + Duration::from_secs(1));
        // A literal address needs no resolver.
        let ip = url::Url::parse("http://93.184.216.34/v.mp4").unwrap();
        assert!(matches!(
            vet(&ip, Rule::HandOn, &Silent).await,
            Ok(Vetted::Addresses(_))
        ));
    }
}
