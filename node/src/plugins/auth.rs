//! What every authentication plugin shares, as Kong 3.9.3's auth plugins each repeat it: the
//! upstream headers naming the consumer and credential, the anonymous consumer, and the
//! logical OR between several auth plugins that all have `anonymous` set.
//!
//! Guarantees of revocation (credentials and ACL groups are replicated configuration, through
//! Raft): the Admin API answers a revocation once it is committed and applied on the node that
//! took it, which refuses the credential from then on; every other node refuses it as soon as
//! it applies the same log entry (milliseconds on a healthy cluster: `bench` `revocation`). A
//! node cut off from the leader keeps its last configuration, so a revocation reaches it only
//! when it rejoins (eventually consistent); a node never accepts a credential again after it
//! has applied its revocation (log order). `tests/cluster.rs` checks both with a node down
//! during the revocation.
//!
//! Clients cannot forge these headers: the proxy removes every one of them from the client's
//! request before any plugin runs ([`strip_client_identity`]), so what the upstream sees
//! was set by a plugin of this request.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::{error_response, ConsumerInfo, CredentialInfo, Ctx, Flow};

pub static X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
pub static X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
pub static X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
pub static X_CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
pub static X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");
pub static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
pub static X_AUTHENTICATED_GROUPS: HeaderName = HeaderName::from_static("x-authenticated-groups");
pub static X_AUTHENTICATED_SCOPE: HeaderName = HeaderName::from_static("x-authenticated-scope");
pub static X_AUTHENTICATED_USERID: HeaderName = HeaderName::from_static("x-authenticated-userid");

/// The headers through which the gateway tells the upstream who the client is.
static IDENTITY: [&HeaderName; 9] = [
    &X_CONSUMER_ID,
    &X_CONSUMER_USERNAME,
    &X_CONSUMER_CUSTOM_ID,
    &X_CREDENTIAL_IDENTIFIER,
    &X_ANONYMOUS_CONSUMER,
    &X_CONSUMER_GROUPS,
    &X_AUTHENTICATED_GROUPS,
    &X_AUTHENTICATED_SCOPE,
    &X_AUTHENTICATED_USERID,
];

/// Removes the identity headers a client sent, however spelled: with `_` for `-` too (when
/// `--underscores-in-headers` lets such names in, an upstream that reads headers as CGI
/// variables would take `X_Consumer_Username` for `X-Consumer-Username`). One pass over the
/// names; nothing is allocated unless one is there (they all start with `x-` then `c` or
/// `a`).
pub fn strip_client_identity(h: &mut http::HeaderMap) {
    let candidate = |k: &HeaderName| may_be_identity(k.as_str().as_bytes());
    if !h.keys().any(candidate) {
        return;
    }
    let forged: Vec<HeaderName> = h
        .keys()
        .filter(|k| candidate(k))
        .filter(|k| {
            let dashed = k.as_str().replace('_', "-");
            IDENTITY.iter().any(|n| n.as_str() == dashed)
        })
        .cloned()
        .collect();
    for name in forged {
        h.remove(name);
    }
}

/// Whether a (lower-case) header name may be one of the identity headers: the cheap first
/// test, exact matching follows.
pub fn may_be_identity(b: &[u8]) -> bool {
    b.len() > 3 && b[0] == b'x' && matches!(b[1], b'-' | b'_') && matches!(b[2], b'c' | b'a')
}

/// Sets the consumer's headers, and the credential's identifier (`None`: anonymous).
pub fn set_consumer(
    ctx: &mut Ctx<'_>,
    req: &mut http::request::Parts,
    consumer: Arc<ConsumerInfo>,
    credential: Option<(CredentialInfo, HeaderValue)>,
) {
    let h = &mut req.headers;
    h.insert(X_CONSUMER_ID.clone(), consumer.id_header.clone());
    match &consumer.username {
        Some(u) => h.insert(X_CONSUMER_USERNAME.clone(), u.clone()),
        None => h.remove(&X_CONSUMER_USERNAME),
    };
    match &consumer.custom_id {
        Some(u) => h.insert(X_CONSUMER_CUSTOM_ID.clone(), u.clone()),
        None => h.remove(&X_CONSUMER_CUSTOM_ID),
    };
    match credential {
        Some((cred, identifier)) => {
            h.insert(X_CREDENTIAL_IDENTIFIER.clone(), identifier);
            h.remove(&X_ANONYMOUS_CONSUMER);
            ctx.credential = Some(cred);
        }
        None => {
            h.remove(&X_CREDENTIAL_IDENTIFIER);
            h.insert(
                X_ANONYMOUS_CONSUMER.clone(),
                HeaderValue::from_static("true"),
            );
            ctx.credential = None;
        }
    }
    ctx.consumer = Some(consumer);
}

/// Kong's logical OR: a plugin with `anonymous` set does nothing when an earlier auth plugin
/// already identified a credential.
pub fn already_authenticated(anonymous: &Option<String>, ctx: &Ctx<'_>) -> bool {
    anonymous.is_some() && ctx.credential.is_some()
}

/// The end of a failed authentication: with `anonymous`, the request goes on as that
/// consumer (a 500 when it does not exist, as Kong); without, the rejection is sent.
pub fn reject_or_anonymous(
    ctx: &mut Ctx<'_>,
    req: &mut http::request::Parts,
    anonymous: &Option<String>,
    rejection: impl FnOnce() -> Response<Full<Bytes>>,
) -> Flow {
    let Some(who) = anonymous else {
        return Flow::Respond(rejection());
    };
    match ctx.config.consumer_by_ref(who).cloned() {
        // Kong 3.9.3 fails inside `kong.client.authenticate(nil, nil)`: its generic 500.
        None => {
            tracing::error!(anonymous = %who, "the anonymous consumer is configured but does not exist");
            Flow::Respond(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            ))
        }
        Some(c) => {
            set_consumer(ctx, req, c, None);
            Flow::Continue
        }
    }
}

/// A 401 with a message and a `WWW-Authenticate` challenge.
pub fn unauthorized(message: &str, challenge: &HeaderValue) -> Response<Full<Bytes>> {
    let mut r = error_response(StatusCode::UNAUTHORIZED, message);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge.clone());
    r
}

/// A challenge header value, falling back to `fallback` when the realm cannot be sent.
pub fn challenge(text: String, fallback: &'static str) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(fallback))
}

/// The hash an HMAC is taken with.
#[derive(Debug, Clone, Copy)]
pub enum Sha {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

/// HMAC of `data` under `key` (jwt's HS* and hmac-auth's signatures).
pub fn hmac(sha: Sha, key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }
    match sha {
        Sha::Sha1 => run::<Hmac<sha1::Sha1>>(key, data),
        Sha::Sha256 => run::<Hmac<sha2::Sha256>>(key, data),
        Sha::Sha384 => run::<Hmac<sha2::Sha384>>(key, data),
        Sha::Sha512 => run::<Hmac<sha2::Sha512>>(key, data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identity_headers_are_removed_and_others_kept() {
        let mut h = http::HeaderMap::new();
        h.insert("x-consumer-id", HeaderValue::from_static("forged"));
        h.insert("X-Anonymous-Consumer", HeaderValue::from_static("false"));
        h.insert("x-consumer-groups", HeaderValue::from_static("admin"));
        h.insert("x-credential-identifier", HeaderValue::from_static("x"));
        h.insert("x-authenticated-groups", HeaderValue::from_static("admin"));
        h.insert("x_consumer_username", HeaderValue::from_static("forged"));
        h.insert("x_authenticated_userid", HeaderValue::from_static("forged"));
        h.insert("x-custom", HeaderValue::from_static("kept"));
        h.insert("x-consumer-custom-ish", HeaderValue::from_static("kept"));
        h.insert("accept", HeaderValue::from_static("kept"));
        strip_client_identity(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(h.contains_key("x-custom") && h.contains_key("accept"));
        assert!(h.contains_key("x-consumer-custom-ish"));
    }
}
