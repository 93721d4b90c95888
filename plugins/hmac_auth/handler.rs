//! `hmac-auth`: identifies the consumer from an HMAC signature over chosen request headers,
//! as Kong 3.9.3's plugin does (`kong/plugins/hmac-auth/access.lua`): a `Date` or `X-Date`
//! within `clock_skew`, the `hmac username=…, algorithm=…, headers=…, signature=…`
//! parameters, Kong's signing string, and optionally the body's `Digest`.

use std::collections::HashMap;
use std::sync::Arc;
#[cfg(test)]
use std::sync::LazyLock;

use base64::Engine;
use http::{HeaderName, HeaderValue};
use sha2::Digest;
use subtle::ConstantTimeEq;
use tollgate_config::entities::HmacAuthCredential;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::hmac_auth::{HmacAuthConfig, SCHEMA};
use tollgate_config::State;
use uuid::Uuid;

use super::auth::{self, already_authenticated, reject_or_anonymous, set_consumer};
use super::{CredentialInfo, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = HmacAuthConfig::parse(&p.config.0)?;
    let challenge = match &cfg.realm {
        Some(r) => auth::challenge(format!("hmac realm=\"{r}\""), "hmac"),
        None => HeaderValue::from_static("hmac"),
    };
    Some(Arc::new(HmacAuth {
        id: p.id,
        cfg,
        challenge,
    }))
}

/// A credential as the data plane keeps it.
pub struct Entry {
    pub id: Uuid,
    pub consumer: Uuid,
    pub username: HeaderValue,
    secret: Vec<u8>,
}

/// Credentials by username.
pub type Index = HashMap<String, Arc<Entry>>;

pub fn index(state: &State, _prev: &Index) -> Index {
    state
        .all::<HmacAuthCredential>()
        .filter_map(|c| {
            Some((
                c.username.clone(),
                Arc::new(Entry {
                    id: c.id,
                    consumer: c.consumer.id,
                    username: HeaderValue::from_str(&c.username).ok()?,
                    secret: c.secret.as_bytes().to_vec(),
                }),
            ))
        })
        .collect()
}

/// Kong 3.9.3's messages.
const NO_DATE: &str = "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication";
const NOT_VALID: &str = "HMAC signature cannot be verified";
const NOT_SAME: &str = "HMAC signature does not match";

/// Kong's pattern for the parameters, greedy as PCRE reads it. [`params`] finds the same
/// captures without running it (a test holds the two to agreement): a regex with four greedy
/// groups costs more than the rest of the plugin together.
#[cfg(test)]
static PARAMS: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r#"[\t\n\x0B\x0C\r ]*[Hh]mac[\t\n\x0B\x0C\r ]*username="(.+)",[\t\n\x0B\x0C\r ]*algorithm="(.+)",[\t\n\x0B\x0C\r ]*headers="(.+)",[\t\n\x0B\x0C\r ]*signature="(.+)""#,
    )
    .expect("static regex")
});

/// PCRE's `\s`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The last `",\s*<name>="` in `v` that ends at or before `end`: its start (the quote) and end.
/// `end` may fall inside a character; the search then stops short of it.
fn separator_before(v: &str, name: &str, end: usize) -> Option<(usize, usize)> {
    let b = v.as_bytes();
    let mut limit = end.min(v.len());
    while !v.is_char_boundary(limit) {
        limit -= 1;
    }
    while let Some(p) = v[..limit].rfind(name) {
        let after = p + name.len();
        limit = p;
        let mut q = p;
        while q > 0 && is_space(b[q - 1]) {
            q -= 1;
        }
        if q >= 2 && &b[q - 2..q] == b"\"," {
            return Some((q - 2, after));
        }
    }
    None
}

/// Kong's greedy reading: each group runs to the last separator that still lets the rest
/// match, the signature to the last quote; the first `hmac username="` that leaves a
/// username.
fn parse_params(v: &str) -> Option<[&str; 4]> {
    if v.contains('\n') {
        // PCRE's `.` stops at a newline; header values have none, and such a value is
        // refused rather than read differently.
        return None;
    }
    // Each group holds at least one character: each separator ends before the next begins.
    let last_quote = v.rfind('"')?;
    let (s0, s1) = separator_before(v, "signature=\"", last_quote.checked_sub(1)?)?;
    let (h0, h1) = separator_before(v, "headers=\"", s0.checked_sub(1)?)?;
    let (a0, a1) = separator_before(v, "algorithm=\"", h0.checked_sub(1)?)?;
    // The first `[Hh]mac\s*username="` ending before the algorithm separator.
    let b = v.as_bytes();
    let mut from = 0;
    let user_start = loop {
        let i = from + v[from..].find("mac")?;
        from = i + 3;
        if i == 0 || !matches!(b[i - 1], b'H' | b'h') {
            continue;
        }
        let mut j = i + 3;
        while j < b.len() && is_space(b[j]) {
            j += 1;
        }
        if v[j..].starts_with("username=\"") {
            let start = j + "username=\"".len();
            if start < a0 {
                break start;
            }
            return None;
        }
    };
    Some([
        &v[user_start..a0],
        &v[a1..h0],
        &v[h1..s0],
        &v[s1..last_quote],
    ])
}

static X_DATE: HeaderName = HeaderName::from_static("x-date");
static DIGEST: HeaderName = HeaderName::from_static("digest");

/// The signed parameters a client sent.
struct Params {
    username: String,
    algorithm: String,
    headers: Vec<String>,
    signature: String,
}

fn params(v: Option<&HeaderValue>) -> Option<Params> {
    let [username, algorithm, headers, signature] = parse_params(v?.to_str().ok()?)?;
    Some(Params {
        username: username.to_string(),
        algorithm: algorithm.to_string(),
        headers: headers.split(' ').map(str::to_string).collect(),
        signature: signature.to_string(),
    })
}

pub struct HmacAuth {
    id: Uuid,
    cfg: HmacAuthConfig,
    challenge: HeaderValue,
}

impl HmacAuth {
    fn skew_ok(&self, req: &http::request::Parts, name: &HeaderName, now: f64) -> bool {
        let Some(t) = req
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
        else {
            return false;
        };
        let t = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        (now.floor() - t).abs() <= self.cfg.clock_skew
    }

    fn authenticate(
        &self,
        ctx: &mut Ctx<'_>,
        req: &mut http::request::Parts,
    ) -> Result<(), &'static str> {
        let proxy = req.headers.contains_key(http::header::PROXY_AUTHORIZATION);
        if !proxy && !req.headers.contains_key(http::header::AUTHORIZATION) {
            return Err("Unauthorized");
        }
        if !self.skew_ok(req, &X_DATE, ctx.now) && !self.skew_ok(req, &http::header::DATE, ctx.now)
        {
            return Err(NO_DATE);
        }
        let p = match params(req.headers.get(http::header::PROXY_AUTHORIZATION)) {
            Some(p) => {
                if self.cfg.hide_credentials {
                    req.headers.remove(http::header::PROXY_AUTHORIZATION);
                }
                Some(p)
            }
            None => {
                let p = params(req.headers.get(http::header::AUTHORIZATION));
                if self.cfg.hide_credentials {
                    req.headers.remove(http::header::AUTHORIZATION);
                }
                p
            }
        };
        let Some(p) = p else {
            return Err(NOT_VALID);
        };
        let enforced = self
            .cfg
            .enforce_headers
            .iter()
            .all(|h| p.headers.contains(h));
        if !enforced || !self.cfg.algorithms.contains(&p.algorithm) {
            return Err(NOT_VALID);
        }
        let Some(entry) = ctx.config.hmac_credential(&p.username).cloned() else {
            return Err(NOT_VALID);
        };
        let signing = signing_string(req, &p.headers);
        let Some(mine) = sign(&p.algorithm, &entry.secret, signing.as_bytes()) else {
            return Err(NOT_VALID);
        };
        // nginx's decode_base64: padding optional.
        let given = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(p.signature.trim_end_matches('=').as_bytes())
            .unwrap_or_default();
        if !bool::from(mine.as_slice().ct_eq(given.as_slice())) {
            return Err(NOT_SAME);
        }
        if self.cfg.validate_request_body && !body_ok(req, ctx.body.as_deref()) {
            return Err(NOT_SAME);
        }
        let Some(consumer) = ctx.config.consumer(entry.consumer).cloned() else {
            return Err(NOT_VALID);
        };
        let cred = CredentialInfo {
            id: entry.id,
            consumer: entry.consumer,
        };
        set_consumer(ctx, req, consumer, Some((cred, entry.username.clone())));
        Ok(())
    }
}

/// Kong's signing string: per listed header `name: value` (its first value), or for the
/// pseudo-headers `@request-target` (`method path?query`, lower-case method) and
/// `request-line` (`METHOD path?query HTTP/x.y`), or `name:` when absent; joined by `\n`.
fn signing_string(req: &http::request::Parts, headers: &[String]) -> String {
    let uri = req
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = String::new();
    for (i, h) in headers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let value = HeaderName::from_bytes(h.as_bytes())
            .ok()
            .and_then(|n| req.headers.get(n))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match value {
            Some(v) => {
                out.push_str(h);
                out.push_str(": ");
                out.push_str(&v);
            }
            None if h == "@request-target" => {
                out.push_str(h);
                out.push_str(": ");
                out.push_str(&req.method.as_str().to_ascii_lowercase());
                out.push(' ');
                out.push_str(uri);
            }
            None if h == "request-line" => {
                let version = match req.version {
                    http::Version::HTTP_10 => "1.0",
                    http::Version::HTTP_2 => "2.0",
                    _ => "1.1",
                };
                out.push_str(&format!("{} {uri} HTTP/{version}", req.method));
            }
            None => {
                out.push_str(h);
                out.push(':');
            }
        }
    }
    out
}

fn sign(algorithm: &str, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let sha = match algorithm {
        "hmac-sha1" => auth::Sha::Sha1,
        "hmac-sha256" => auth::Sha::Sha256,
        "hmac-sha384" => auth::Sha::Sha384,
        "hmac-sha512" => auth::Sha::Sha512,
        _ => return None,
    };
    Some(auth::hmac(sha, key, data))
}

/// Kong's body check: with no `Digest`, the body must be empty; otherwise the header must be
/// exactly `SHA-256=<base64 of the body's SHA-256>`.
fn body_ok(req: &http::request::Parts, body: Option<&[u8]>) -> bool {
    let body = body.unwrap_or_default();
    match req.headers.get(&DIGEST) {
        None => body.is_empty(),
        Some(d) => {
            let mine = format!(
                "SHA-256={}",
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
            );
            bool::from(mine.as_bytes().ct_eq(d.as_bytes()))
        }
    }
}

impl Plugin for HmacAuth {
    super::identity!();

    fn needs_body(&self) -> bool {
        self.cfg.validate_request_body
    }

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        if already_authenticated(&self.cfg.anonymous, ctx) {
            return Flow::Continue;
        }
        match self.authenticate(ctx, req) {
            Ok(()) => Flow::Continue,
            Err(m) => reject_or_anonymous(ctx, req, &self.cfg.anonymous, || {
                auth::unauthorized(m, &self.challenge)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_read_greedily_as_pcre_does() {
        let v = HeaderValue::from_static(
            r#"hmac username="bob", algorithm="hmac-sha256", headers="date request-line", signature="c2ln""#,
        );
        let p = params(Some(&v)).unwrap();
        assert_eq!(p.username, "bob");
        assert_eq!(p.algorithm, "hmac-sha256");
        assert_eq!(p.headers, ["date", "request-line"]);
        assert_eq!(p.signature, "c2ln");
        assert!(params(Some(&HeaderValue::from_static("hmac username=bob"))).is_none());
    }

    proptest::proptest! {
        #[test]
        fn the_parser_reads_what_kongs_regex_reads(parts in proptest::collection::vec(0usize..12, 0..14)) {
            const BITS: [&str; 12] = [
                "hmac ", "Hmac", "username=\"", "\", ", "\",", "algorithm=\"",
                "headers=\"", "signature=\"", "\"", "a", " ", "x,y",
            ];
            let v: String = parts.iter().map(|i| BITS[*i]).collect();
            let want = PARAMS
                .captures(&v)
                .map(|m| [1, 2, 3, 4].map(|i| m.get(i).map_or("", |g| g.as_str()).to_string()));
            let got = parse_params(&v).map(|g| g.map(str::to_string));
            proptest::prop_assert_eq!(got, want, "{}", v);
        }

        /// Well-formed headers whose values themselves hold separators and quotes, where
        /// greediness decides the captures.
        #[test]
        fn greedy_captures_agree(fill in proptest::collection::vec(proptest::collection::vec(0usize..9, 1..5), 6)) {
            const BITS: [&str; 9] = [
                "a", "\"", "\", ", ",", "algorithm=\"", "headers=\"", "signature=\"",
                " ", "hmac username=\"",
            ];
            let f: Vec<String> = fill.iter().map(|p| p.iter().map(|i| BITS[*i]).collect()).collect();
            let v = format!(
                "{}hmac username=\"{}\", algorithm=\"{}\",headers=\"{}\",  signature=\"{}\"{}",
                f[0], f[1], f[2], f[3], f[4], f[5]
            );
            let want = PARAMS
                .captures(&v)
                .map(|m| [1, 2, 3, 4].map(|i| m.get(i).map_or("", |g| g.as_str()).to_string()));
            proptest::prop_assert!(want.is_some(), "{}", v);
            let got = parse_params(&v).map(|g| g.map(str::to_string));
            proptest::prop_assert_eq!(got, want, "{}", v);
        }
    }

    #[test]
    fn the_signing_string_is_kongs() {
        let req = http::Request::builder()
            .method("POST")
            .uri("/requests?a=1")
            .header("date", "Thu, 01 Jan 2026 00:00:00 GMT")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let s = signing_string(
            &req,
            &[
                "date".into(),
                "request-line".into(),
                "@request-target".into(),
                "x-none".into(),
            ],
        );
        assert_eq!(
            s,
            "date: Thu, 01 Jan 2026 00:00:00 GMT\nPOST /requests?a=1 HTTP/1.1\n@request-target: post /requests?a=1\nx-none:"
        );
    }
}
