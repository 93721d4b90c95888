//! Parsing of cluster addressing flags (`--seeds`), shared by the CLI and the gossip layer.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum SeedError {
    #[error("seed '{0}' is not host:port")]
    NoPort(String),
    #[error("seed '{0}' has an invalid port")]
    BadPort(String),
    #[error("seed '{0}' has an empty host")]
    EmptyHost(String),
}

/// Parses a comma-separated list of `host:port` gossip addresses. Empty items are skipped, so
/// `--seeds ""` means none.
pub fn parse_seeds(s: &str) -> Result<Vec<String>, SeedError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (host, port) = item
            .rsplit_once(':')
            .ok_or_else(|| SeedError::NoPort(item.to_string()))?;
        if host.trim_matches(['[', ']']).is_empty() {
            return Err(SeedError::EmptyHost(item.to_string()));
        }
        match port.parse::<u16>() {
            Ok(p) if p != 0 => {}
            _ => return Err(SeedError::BadPort(item.to_string())),
        }
        out.push(item.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        assert_eq!(
            parse_seeds("a:7946, 10.0.0.2:7946,,[::1]:1").unwrap(),
            vec!["a:7946", "10.0.0.2:7946", "[::1]:1"]
        );
        assert_eq!(parse_seeds("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_seeds("a"), Err(SeedError::NoPort("a".into())));
        assert_eq!(parse_seeds("a:0"), Err(SeedError::BadPort("a:0".into())));
        assert_eq!(parse_seeds(":1"), Err(SeedError::EmptyHost(":1".into())));
    }
}
