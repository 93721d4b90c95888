//! Host and port strings as Kong reads them (`kong/tools/ip.lua`): an IPv4 address, an IPv6
//! address (bracketed when it has a port), or a host name, each with an optional port.
//! Upstream names, targets and `host_header` are checked and normalised with these, so that
//! `001.002.003.004:80` and `1.2.3.4:80` are the same target, as in Kong.

/// What a host string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Ipv4,
    Ipv6,
    Name,
}

/// A host with an optional port, normalised: IPv4 without leading zeros, IPv6 fully
/// expanded in lower case and without brackets, a name as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub kind: HostKind,
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// Kong's `format_host`: `host:port`, an IPv6 address in brackets, `default_port` when
    /// the string had none.
    pub fn format(&self, default_port: Option<u16>) -> String {
        let host = match self.kind {
            HostKind::Ipv6 => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        match self.port.or(default_port) {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

/// Kong's `hostname_type`: two colons or more is IPv6, digits and dots IPv4, else a name.
fn kind_of(s: &str) -> HostKind {
    if s.matches(':').count() > 1 {
        HostKind::Ipv6
    } else if !s.is_empty()
        && s.split(':')
            .next()
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
    {
        HostKind::Ipv4
    } else {
        HostKind::Name
    }
}

fn port_of(digits: &str) -> Result<u16, String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid port number".into());
    }
    digits
        .parse::<u32>()
        .ok()
        .filter(|p| *p <= 65535)
        .map(|p| p as u16)
        .ok_or_else(|| "invalid port number".into())
}

fn ipv4(s: &str) -> Result<(String, Option<u16>), String> {
    let bad = || format!("invalid ipv4 address: {s}");
    let (addr, port) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let parts: Vec<&str> = addr.split('.').collect();
    if parts.len() != 4 {
        return Err(bad());
    }
    let mut octets = [0u16; 4];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        octets[i] = p.parse().map_err(|_| bad())?;
        if octets[i] > 255 {
            return Err(bad());
        }
    }
    let port = match port {
        Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => return Err(bad()),
        Some(p) => Some(port_of(p)?),
        None => None,
    };
    Ok((
        format!("{}.{}.{}.{}", octets[0], octets[1], octets[2], octets[3]),
        port,
    ))
}

fn ipv6(s: &str) -> Result<(String, Option<u16>), String> {
    let (mut check, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let Some((inner, tail)) = rest.split_once(']') else {
                return Err(format!("invalid ipv6 address: {s}"));
            };
            let port = match tail {
                "" => None,
                t => match t.strip_prefix(':') {
                    Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(port_of(p)?),
                    _ => return Err("invalid ipv6 address".into()),
                },
            };
            (inner.to_string(), port)
        }
        None => (s.to_string(), None),
    };
    if check.starts_with(':') {
        check.insert(0, '0');
    }
    if check.ends_with(':') {
        check.push('0');
    }
    if check.contains("::") {
        let colons = check.matches(':').count();
        let fill = format!(":{}", "0:".repeat(8usize.saturating_sub(colons)));
        check = check.replacen("::", &fill, 1);
    }
    let groups: Vec<&str> = check.split(':').collect();
    let valid = groups.len() == 8
        && groups
            .iter()
            .all(|g| (1..=4).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return Err(format!("invalid ipv6 address: {s}"));
    }
    let full: Vec<String> = groups
        .iter()
        .map(|g| format!("{:0>4}", g.to_ascii_lowercase()))
        .collect();
    Ok((full.join(":"), port))
}

fn hostname(s: &str) -> Result<(String, Option<u16>), String> {
    let bad = || format!("invalid hostname: {s}");
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (n, Some(port_of(p)?))
        }
        _ => (s, None),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(bad());
    }
    let segments: Vec<&str> = name.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        // A trailing dot (an FQDN) leaves one empty last segment, which is allowed.
        if seg.ends_with('-') || (seg.is_empty() && i + 1 != segments.len()) {
            return Err(bad());
        }
    }
    Ok((name.to_string(), port))
}

/// Kong's `normalize_ip`: checks and normalises `s`, or says why it is not a host.
pub fn normalize(s: &str) -> Result<HostPort, String> {
    let kind = kind_of(s);
    let (host, port) = match kind {
        HostKind::Ipv4 => ipv4(s)?,
        HostKind::Ipv6 => ipv6(s)?,
        HostKind::Name => hostname(s)?,
    };
    Ok(HostPort { kind, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_kong_normalises() {
        let f = |s: &str| normalize(s).map(|h| h.format(Some(8000)));
        assert_eq!(f("001.002.003.004:123").unwrap(), "1.2.3.4:123");
        assert_eq!(f("1.2.3.4").unwrap(), "1.2.3.4:8000");
        assert_eq!(
            f("::1").unwrap(),
            "[0000:0000:0000:0000:0000:0000:0000:0001]:8000"
        );
        assert_eq!(
            f("[::1]:81").unwrap(),
            "[0000:0000:0000:0000:0000:0000:0000:0001]:81"
        );
        assert_eq!(f("a.test").unwrap(), "a.test:8000");
        assert_eq!(f("a.test:90").unwrap(), "a.test:90");
        assert_eq!(f("a.test:99999").unwrap_err(), "invalid port number");
        assert_eq!(f("a b").unwrap_err(), "invalid hostname: a b");
        assert_eq!(f("a-.test").unwrap_err(), "invalid hostname: a-.test");
        assert_eq!(
            f("300.1.1.1").unwrap_err(),
            "invalid ipv4 address: 300.1.1.1"
        );
        assert!(f("1::2::3").is_err());
        assert_eq!(normalize("x.test").unwrap().kind, HostKind::Name);
        assert_eq!(normalize("10.0.0.1:80").unwrap().kind, HostKind::Ipv4);
    }
}
