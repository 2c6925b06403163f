//! The client IP behind trusted proxies (spec §6.4): forwarding headers are honoured only when
//! the peer is a trusted proxy, and `X-Forwarded-For` is read right to left skipping trusted
//! hops.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// Parses `--trusted-proxies`: comma-separated CIDRs or bare IPs.
pub fn parse_trusted_proxies(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("trusted proxy {s:?} is neither an IP address nor a CIDR"))
        })
        .collect()
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// Whether the peer is a trusted proxy.
pub fn peer_trusted(peer: Option<IpAddr>, proxies: &[IpNet]) -> bool {
    peer.is_some_and(|p| trusted(p, proxies))
}

/// The client's IP: the peer, unless the peer is a trusted proxy, then the right-most
/// untrusted `X-Forwarded-For` hop (or `X-Real-Ip`).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, proxies: &[IpNet]) -> Option<IpAddr> {
    let peer_ip = peer?;
    if !trusted(peer_ip, proxies) {
        return Some(peer_ip);
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if let Some(ip) = hops.iter().rev().find(|ip| !trusted(**ip, proxies)) {
        return Some(*ip);
    }
    if let Some(first) = hops.first() {
        return Some(*first);
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(Some(peer_ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_need_a_trusted_peer() {
        let proxies = parse_trusted_proxies("10.0.0.0/8, 192.168.1.1").expect("parse");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, 5.6.7.8, 10.1.1.1".parse().expect("header"),
        );
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let outsider: IpAddr = "8.8.8.8".parse().expect("ip");
        assert_eq!(client_ip(Some(proxy), &h, &proxies), "5.6.7.8".parse().ok());
        assert_eq!(client_ip(Some(outsider), &h, &proxies), Some(outsider));
        assert!(parse_trusted_proxies("nope").is_err());
        assert!(parse_trusted_proxies("").expect("empty").is_empty());
    }
}
