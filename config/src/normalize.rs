//! RFC 3986 path normalisation, done before routing so that `/a/../b`, `//b` and `/%62` all
//! reach the route for `/b` (and cannot sneak past one).
//!
//! As Kong: escapes of unreserved characters are decoded (Kong decodes a little more, but
//! anything else would not survive being forwarded), escapes that stay are upper-cased, dot
//! segments are removed and repeated slashes merged.
//!
//! Normalising twice gives what normalising once gave: the router and the upstream (which
//! decodes the path once more) must see the same path. So a `%` that starts no valid escape
//! is itself escaped (`%25`): otherwise `/%%361dmin` would route as `/%61dmin` and reach the
//! upstream as `/admin`, past a route on `/admin` and its authentication (found by the
//! property-based fuzzer).

use std::borrow::Cow;

/// RFC 3986 unreserved characters: the only escapes decoded. Others stay encoded so that the
/// normalised path is still a valid request-target when it is forwarded upstream.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises a request path (without its query). Borrows when nothing changes, which is the
/// common case.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let b = path.as_bytes();
    let needs = !path.starts_with('/')
        || b.contains(&b'%')
        || path.contains("//")
        || path.contains("/./")
        || path.contains("/../")
        || path.ends_with("/.")
        || path.ends_with("/..");
    if !needs {
        return Cow::Borrowed(path);
    }
    Cow::Owned(remove_dot_segments(&decode_unreserved(path)))
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + 1);
    if !path.starts_with('/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = h * 16 + l;
                if is_unreserved(v) {
                    out.push(v);
                } else {
                    out.push(b'%');
                    out.push(b[i + 1].to_ascii_uppercase());
                    out.push(b[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        if b[i] == b'%' {
            out.extend_from_slice(b"%25");
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    // Only ASCII was decoded, so the bytes are as valid UTF-8 as the input was.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// RFC 3986 §5.2.4, plus merging of empty segments. Never climbs above the root.
fn remove_dot_segments(path: &str) -> String {
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    let mut segs: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !segs.is_empty()) {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_kong() {
        let cases = [
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../b", "/b"),
            ("//a///b", "/a/b"),
            ("/%61%62", "/ab"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/", "/a/"),
            ("/a/.", "/a/"),
            ("/", "/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/%FF", "/%FF"),
            ("/%zz", "/%25zz"),
            ("/%", "/%25"),
            ("/%4", "/%254"),
            ("/%%34A", "/%254A"),
            ("/%%361dmin", "/%2561dmin"),
            ("/a%20b", "/a%20b"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input), want, "input {input}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in [
            "/%%34A",
            "/%%361dmin",
            "/%25%34%31",
            "/a/%2e%2e%2f..",
            "/%2e%2e/%2e/x",
            "/%",
        ] {
            let once = normalize_path(p).into_owned();
            assert_eq!(normalize_path(&once), once, "input {p}");
        }
    }

    #[test]
    fn borrows_when_clean() {
        assert!(matches!(normalize_path("/api/v1/users"), Cow::Borrowed(_)));
    }
}
