//! Trusted proxies (`--trusted-ips`, `--real-ip-header`): from a peer in one of these
//! networks the client address is the one the real-IP header names (Kong's `trusted_ips` and
//! `real_ip_header`; with `--real-ip-recursive`, Kong's `real_ip_recursive`), and the peer's
//! `X-Forwarded-*` headers are kept. From anyone else both are ignored, so a client cannot
//! choose the address rate limits and logs see.

use std::net::IpAddr;

use http::header::HeaderName;
use http::HeaderMap;
use ipnet::IpNet;

/// The trusted networks and where they put the client's address.
#[derive(Debug, Clone)]
pub struct TrustedIps {
    nets: Vec<IpNet>,
    header: HeaderName,
    /// nginx's `real_ip_recursive`: in a list, the last address that is not itself a trusted
    /// proxy (the first one when all are), rather than the last address.
    recursive: bool,
}

impl Default for TrustedIps {
    fn default() -> TrustedIps {
        TrustedIps {
            nets: Vec::new(),
            header: HeaderName::from_static("x-real-ip"),
            recursive: false,
        }
    }
}

/// A flag value that is not an IP, network or header name.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrustedIpsError(String);

impl TrustedIps {
    /// Parses `--trusted-ips` entries (IPs or CIDR networks) and `--real-ip-header`.
    pub fn new(entries: &[String], header: &str) -> Result<TrustedIps, TrustedIpsError> {
        let mut nets = Vec::new();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let net = match e.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => e.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    TrustedIpsError(format!(
                        "--trusted-ips: '{e}' is not an IP or a CIDR network"
                    ))
                })?,
            };
            nets.push(net);
        }
        let header = HeaderName::from_bytes(header.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| {
                TrustedIpsError(format!("--real-ip-header: '{header}' is not a header name"))
            })?;
        Ok(TrustedIps {
            nets,
            header,
            recursive: false,
        })
    }

    /// Turns nginx's `real_ip_recursive` on or off.
    pub fn recursive(mut self, on: bool) -> TrustedIps {
        self.recursive = on;
        self
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        !self.nets.is_empty() && self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address a trusted proxy gives: the real-IP header's value, or for a list
    /// (`X-Forwarded-For`) its last address, the one the trusted proxy itself added.
    pub fn real_ip(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let parse = |ip: &str| -> Option<IpAddr> {
            let ip = ip.trim();
            // `[::1]` and `1.2.3.4:5678` forms, as some proxies write them.
            let ip = ip.trim_start_matches('[').split(']').next().unwrap_or(ip);
            ip.parse::<IpAddr>()
                .ok()
                .or_else(|| ip.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
        };
        if !self.recursive {
            let last = headers.get_all(&self.header).iter().next_back()?;
            return parse(last.to_str().ok()?.rsplit(',').next()?);
        }
        // Every value of the header, as one list, walked from the right past trusted proxies.
        let mut first = None;
        for v in headers.get_all(&self.header).iter().rev() {
            for part in v.to_str().ok()?.rsplit(',') {
                let ip = parse(part)?;
                if !self.contains(ip) {
                    return Some(ip);
                }
                first = Some(ip);
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_trusted_peers_set_the_client_address() {
        let t = TrustedIps::new(&["10.0.0.0/8".into(), "::1".into()], "X-Forwarded-For").unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(!t.contains("192.168.0.1".parse().unwrap()));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 203.0.113.7"),
        );
        assert_eq!(t.real_ip(&h), Some("203.0.113.7".parse().unwrap()));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(t.real_ip(&h), Some("2001:db8::1".parse().unwrap()));
        h.insert("x-forwarded-for", HeaderValue::from_static("not an ip"));
        assert_eq!(t.real_ip(&h), None);
        assert!(!TrustedIps::default().contains("127.0.0.1".parse().unwrap()));
        assert!(TrustedIps::new(&["10.0.0.0/33".into()], "x-real-ip").is_err());
    }

    #[test]
    fn recursion_walks_past_trusted_proxies() {
        let t = TrustedIps::new(&["10.0.0.0/8".into()], "X-Forwarded-For")
            .unwrap()
            .recursive(true);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 198.51.100.2, 10.0.0.2"),
        );
        assert_eq!(t.real_ip(&h), Some("198.51.100.2".parse().unwrap()));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.9, 10.0.0.2"),
        );
        assert_eq!(t.real_ip(&h), Some("10.0.0.9".parse().unwrap()));
        // Two header lines read as one list.
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        assert_eq!(t.real_ip(&h), Some("203.0.113.7".parse().unwrap()));
    }
}
