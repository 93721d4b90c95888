//! `jwt`: identifies the consumer from a signed JSON Web Token, as Kong 3.9.3's plugin does
//! (`kong/plugins/jwt/handler.lua`, `jwt_parser.lua`): tokens from the query, cookies and
//! headers; the credential named by a claim (payload first, then header); the algorithm must
//! be the credential's; the signature, then `exp`/`nbf` and `maximum_expiration`.
//!
//! Signatures are checked with the `jsonwebtoken` crate's primitives (ring underneath), ES512
//! with RustCrypto's `p521` (ring has no P-521); Ed448 keys are not supported. HS* signatures
//! are compared in constant time. `alg: none` is never accepted, and a token is bounded ([`MAX_TOKEN`]) before it is decoded.
//! A credential's public key is parsed once, when first used, and kept with the credential
//! for as long as it does not change.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tollgate_config::entities::JwtSecret;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::jwt::{JwtConfig, SCHEMA};
use tollgate_config::State;
use uuid::Uuid;

use super::auth::{self, already_authenticated, reject_or_anonymous, set_consumer};
use super::{CredentialInfo, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

/// The longest token read; longer ones are refused before any decoding.
pub const MAX_TOKEN: usize = 16 * 1024;

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = JwtConfig::parse(&p.config.0)?;
    let base = match &cfg.realm {
        Some(r) => format!("Bearer realm=\"{r}\""),
        None => "Bearer".to_string(),
    };
    Some(Arc::new(Jwt {
        id: p.id,
        challenge: auth::challenge(base.clone(), "Bearer"),
        challenge_error: auth::challenge(
            format!("{base} error=\"invalid_token\""),
            "Bearer error=\"invalid_token\"",
        ),
        // Kong's header lookup reads `_` as `-`: `x_jwt` finds an `X-Jwt` header.
        header_names: cfg
            .header_names
            .iter()
            .filter_map(|h| {
                let name = h.to_ascii_lowercase().replace('_', "-");
                http::HeaderName::from_bytes(name.as_bytes()).ok()
            })
            .collect(),
        cfg,
    }))
}

/// A credential as the data plane keeps it.
pub struct Entry {
    pub id: Uuid,
    pub consumer: Uuid,
    pub key: HeaderValue,
    algorithm: String,
    secret: String,
    rsa_public_key: Option<String>,
    /// The public key, parsed on first use (`None`: it does not parse for the algorithm).
    public: OnceLock<Option<DecodingKey>>,
    /// The same for ES512, which has its own verifier.
    p521: OnceLock<Option<p521::ecdsa::VerifyingKey>>,
}

/// Credentials by key, carried over from the previous snapshot while unchanged.
pub type Index = HashMap<String, Arc<Entry>>;

pub fn index(state: &State, prev: &Index) -> Index {
    state
        .all::<JwtSecret>()
        .filter_map(|s| {
            let kept = prev.get(&s.key).filter(|e| {
                e.id == s.id
                    && e.consumer == s.consumer.id
                    && e.algorithm == s.algorithm
                    && e.secret == s.secret
                    && e.rsa_public_key == s.rsa_public_key
            });
            let entry = match kept {
                Some(e) => e.clone(),
                None => Arc::new(Entry {
                    id: s.id,
                    consumer: s.consumer.id,
                    key: HeaderValue::from_str(&s.key).ok()?,
                    algorithm: s.algorithm.clone(),
                    secret: s.secret.clone(),
                    rsa_public_key: s.rsa_public_key.clone(),
                    public: OnceLock::new(),
                    p521: OnceLock::new(),
                }),
            };
            Some((s.key.clone(), entry))
        })
        .collect()
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Kong's `alg_verify` table: the algorithms a token may name.
const KNOWN_ALGS: &[&str] = JwtSecret::ALGORITHMS;

impl Entry {
    /// ES512: a raw `r || s` signature of 132 bytes over SHA-512, by a P-521 key.
    fn verify_es512(&self, signed: &[u8], signature: &[u8]) -> bool {
        use p521::ecdsa::signature::Verifier;
        let key = self.p521.get_or_init(|| {
            let bits = JwtSecret::public_key_bits(self.rsa_public_key.as_deref()?)?;
            p521::ecdsa::VerifyingKey::from_sec1_bytes(&bits).ok()
        });
        let (Some(key), Ok(sig)) = (key, p521::ecdsa::Signature::from_slice(signature)) else {
            return false;
        };
        key.verify(signed, &sig).is_ok()
    }

    fn public_key(&self, alg: Algorithm) -> Option<&DecodingKey> {
        self.public
            .get_or_init(|| {
                let pem = self.rsa_public_key.as_deref()?.replace('\r', "");
                let pem = pem.as_bytes();
                match alg {
                    Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem).ok(),
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem).ok(),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(pem).ok(),
                    _ => None,
                }
            })
            .as_ref()
    }
}

/// A decoded token.
struct Token<'a> {
    signed: &'a str,
    signature: &'a str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

/// Kong's `base64_decode`: the url-safe alphabet, padding optional.
fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// Kong's `decode_token`, with its messages.
fn decode(token: &str) -> Result<Token<'_>, &'static str> {
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(c), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("invalid JSON");
    };
    let object = |part: &str| -> Option<Map<String, Value>> {
        match serde_json::from_slice(&b64(part)?).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    };
    let (Some(header), Some(claims)) = (object(h), object(c)) else {
        return Err("invalid JSON");
    };
    match header.get("alg") {
        Some(Value::String(a)) if KNOWN_ALGS.contains(&a.as_str()) => {}
        _ => return Err("invalid alg"),
    }
    if b64(s).is_none() {
        return Err("invalid signature");
    }
    Ok(Token {
        signed: &token[..h.len() + 1 + c.len()],
        signature: s,
        header,
        claims,
    })
}

/// A failure: Kong's message (or claim errors, sent as the body), and which challenge.
enum Failure {
    Message(String, bool),
    Claims(Map<String, Value>),
}

pub struct Jwt {
    id: Uuid,
    cfg: JwtConfig,
    header_names: Vec<http::HeaderName>,
    challenge: HeaderValue,
    challenge_error: HeaderValue,
}

impl Jwt {
    /// Kong's `retrieve_tokens`: every distinct non-empty token from the query, the cookies
    /// and the headers (`Bearer <token>`).
    fn tokens(&self, req: &http::request::Parts) -> Vec<String> {
        let mut set: Vec<String> = Vec::new();
        let mut add = |t: String| {
            if !t.is_empty() && !set.contains(&t) {
                set.push(t);
            }
        };
        if let Some(q) = req.uri.query() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if self.cfg.uri_param_names.iter().any(|n| *n == k) {
                    add(v.into_owned());
                }
            }
        }
        if !self.cfg.cookie_names.is_empty() {
            for line in req.headers.get_all(header::COOKIE) {
                let Ok(line) = line.to_str() else { continue };
                for pair in line.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=') {
                        if self.cfg.cookie_names.iter().any(|n| n == k.trim()) {
                            add(v.trim().to_string());
                            break;
                        }
                    }
                }
            }
        }
        for name in &self.header_names {
            let Some(v) = req.headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(t) = bearer(v) {
                add(t.to_string());
            }
        }
        set
    }

    fn authenticate(
        &self,
        ctx: &mut Ctx<'_>,
        req: &mut http::request::Parts,
    ) -> Result<(), Failure> {
        let bad = |m: &str| Failure::Message(m.to_string(), true);
        let mut tokens = self.tokens(req);
        let token = match tokens.len() {
            0 => return Err(Failure::Message("Unauthorized".into(), false)),
            1 => tokens.pop().unwrap_or_default(),
            _ => return Err(bad("Multiple tokens provided")),
        };
        if token.len() > MAX_TOKEN {
            return Err(bad("Bad token; too large"));
        }
        let jwt = decode(&token).map_err(|e| bad(&format!("Bad token; {e}")))?;
        let claim = &self.cfg.key_claim_name;
        let key = match jwt.claims.get(claim).or_else(|| jwt.header.get(claim)) {
            None => return Err(bad(&format!("No mandatory '{claim}' in claims"))),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(bad(&format!("Invalid '{claim}' in claims")))
            }
            Some(Value::String(s)) => s.as_str(),
            Some(_) => "",
        };
        let Some(entry) = (!key.is_empty())
            .then(|| ctx.config.jwt_secret(key))
            .flatten()
            .cloned()
        else {
            return Err(bad(&format!("No credentials found for given '{claim}'")));
        };
        let alg = jwt.header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != entry.algorithm {
            return Err(bad("Invalid algorithm"));
        }
        if !self.signature_ok(&jwt, &entry, alg)? {
            return Err(bad("Invalid signature"));
        }
        self.check_claims(&jwt, ctx.now)?;
        let Some(consumer) = ctx.config.consumer(entry.consumer).cloned() else {
            return Err(Failure::Message(
                format!("Could not find consumer for '{claim}={key}'"),
                false,
            ));
        };
        let cred = CredentialInfo {
            id: entry.id,
            consumer: entry.consumer,
        };
        set_consumer(ctx, req, consumer, Some((cred, entry.key.clone())));
        Ok(())
    }

    fn signature_ok(&self, jwt: &Token<'_>, entry: &Entry, alg: &str) -> Result<bool, Failure> {
        let invalid_key = || Failure::Message("Invalid key/secret".into(), true);
        if let Some(bits) = alg.strip_prefix("HS") {
            let secret = if self.cfg.secret_is_base64 {
                b64(&entry.secret).ok_or_else(invalid_key)?
            } else {
                entry.secret.as_bytes().to_vec()
            };
            let given = b64(jwt.signature).unwrap_or_default();
            let sha = match bits {
                "256" => auth::Sha::Sha256,
                "384" => auth::Sha::Sha384,
                _ => auth::Sha::Sha512,
            };
            let mine = auth::hmac(sha, &secret, jwt.signed.as_bytes());
            return Ok(bool::from(mine.as_slice().ct_eq(given.as_slice())));
        }
        if entry.rsa_public_key.is_none() {
            return Err(invalid_key());
        }
        if alg == "ES512" {
            let sig = b64(jwt.signature).unwrap_or_default();
            return Ok(entry.verify_es512(jwt.signed.as_bytes(), &sig));
        }
        let Some(a) = algorithm(alg) else {
            return Ok(false);
        };
        let Some(key) = entry.public_key(a) else {
            return Ok(false);
        };
        let sig = jwt.signature.trim_end_matches('=');
        Ok(jsonwebtoken::crypto::verify(sig, jwt.signed.as_bytes(), key, a).unwrap_or(false))
    }

    /// Kong's `verify_registered_claims` then `check_maximum_expiration`.
    fn check_claims(&self, jwt: &Token<'_>, now: f64) -> Result<(), Failure> {
        let now = now.floor();
        let mut errors = Map::new();
        for claim in self.cfg.claims_to_verify.iter().flatten() {
            let problem = match jwt.claims.get(claim).and_then(Value::as_f64) {
                None => "must be a number",
                Some(exp) if claim == "exp" && exp <= now => "token expired",
                Some(nbf) if claim == "nbf" && nbf > now => "token not valid yet",
                Some(_) => continue,
            };
            errors.insert(claim.clone(), Value::String(problem.into()));
        }
        if !errors.is_empty() {
            return Err(Failure::Claims(errors));
        }
        if self.cfg.maximum_expiration > 0.0 {
            let exp = jwt.claims.get("exp").and_then(Value::as_f64);
            if exp.is_none_or(|e| e - now > self.cfg.maximum_expiration) {
                let mut m = Map::new();
                m.insert(
                    "exp".into(),
                    Value::String("exceeds maximum allowed expiration".into()),
                );
                return Err(Failure::Claims(m));
            }
        }
        Ok(())
    }

    fn respond(&self, f: Failure) -> Response<Full<Bytes>> {
        let (body, challenge) = match f {
            Failure::Message(m, with_error) => (
                serde_json::json!({ "message": m }),
                if with_error {
                    &self.challenge_error
                } else {
                    &self.challenge
                },
            ),
            Failure::Claims(m) => (Value::Object(m), &self.challenge_error),
        };
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge.clone());
        r
    }
}

/// Kong's `\s*[Bb]earer\s+(.+)`, anywhere in the value.
fn bearer(v: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(i) = v[from..].find("earer").map(|i| i + from) {
        from = i + 5;
        if i == 0 || !matches!(v.as_bytes()[i - 1], b'B' | b'b') {
            continue;
        }
        let rest = &v[i + 5..];
        let token = rest.trim_start();
        if token.len() < rest.len() && !token.is_empty() {
            return Some(token);
        }
    }
    None
}

impl Plugin for Jwt {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        if !self.cfg.run_on_preflight && req.method == Method::OPTIONS {
            return Flow::Continue;
        }
        if already_authenticated(&self.cfg.anonymous, ctx) {
            return Flow::Continue;
        }
        match self.authenticate(ctx, req) {
            Ok(()) => Flow::Continue,
            Err(f) => reject_or_anonymous(ctx, req, &self.cfg.anonymous, || self.respond(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn tokens_decode_with_kongs_messages() {
        let h = enc(&serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        let c = enc(&serde_json::json!({"iss": "k"}));
        let ok = format!("{h}.{c}.c2ln");
        assert!(decode(&ok).is_ok());
        assert_eq!(decode("x.y.z").err(), Some("invalid JSON"));
        let none = enc(&serde_json::json!({"alg": "none"}));
        assert_eq!(decode(&format!("{none}.{c}.")).err(), Some("invalid alg"));
        let num = enc(&serde_json::json!({"alg": 256}));
        assert_eq!(decode(&format!("{num}.{c}.c2ln")).err(), Some("invalid alg"));
        assert_eq!(decode(&format!("{h}.{c}.!!")).err(), Some("invalid signature"));
        // No signature part at all: Kong's decoder fails inside its JSON step.
        assert_eq!(decode(&format!("{h}.{c}")).err(), Some("invalid JSON"));
    }

    #[test]
    fn bearer_is_found_as_kongs_regex_finds_it() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("  bearer   abc "), Some("abc "));
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
