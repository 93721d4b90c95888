//! Reading Admin API request bodies: JSON, or form-encoded as Kong's curl examples send them.

use bytes::Bytes;
use http::{header, HeaderMap};
use serde_json::Value;
use tollgate_config::lenient::form_to_json;

/// Why a body could not be read, with Kong's message.
pub struct BodyError(pub String);

/// Parses a body into a JSON object. An empty body is an empty object.
pub fn parse(headers: &HeaderMap, bytes: &Bytes) -> Result<Value, BodyError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // Kong: a JSON body that is not there cannot be parsed; a form or no body is empty.
        if ct.starts_with("application/json") {
            return Err(BodyError::from("Cannot parse JSON body"));
        }
        return Ok(Value::Object(Default::default()));
    }
    if ct.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(bytes)
            .into_owned()
            .take(MAX_ARGS + 1)
            .collect();
        if pairs.len() > MAX_ARGS {
            return Err(BodyError::from("Too many arguments"));
        }
        return form_to_json(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| BodyError(e.to_string()));
    }
    if ct.starts_with("multipart/") {
        return Err(BodyError::from(
            "multipart bodies are not supported; send JSON or form-encoded data",
        ));
    }
    // JSON, declared or not (curl -d without a content type sends form encoding, handled above).
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(BodyError::from(
            "Cannot parse JSON body: expected an object",
        )),
        Err(_) => Err(BodyError::from("Cannot parse JSON body")),
    }
}

/// Whether the body was form-encoded: its values are text, so fields may take them loosely
/// (`port=80`); JSON keeps its types (`{"key": 123}` is not a string).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/x-www-form-urlencoded") || ct.starts_with("multipart/")
        })
}

impl From<&str> for BodyError {
    fn from(m: &str) -> BodyError {
        BodyError(m.to_string())
    }
}

/// Most arguments a form body or a query string may carry (Kong refuses a request whose
/// arguments nginx had to truncate).
pub const MAX_ARGS: usize = 1000;

/// Largest body of an entity write (POST/PUT/PATCH of one entity). Kong's Admin API takes up
/// to 10 MB (`nginx_admin_client_max_body_size`); one entity needs far less, and the bound
/// keeps every write small enough not to stall the Raft log for other writers.
pub const MAX_ENTITY_BODY: usize = 1024 * 1024;

/// Largest `POST /config` body (Kong: 10 MB): declarative files of 30,000 routes fit.
pub const MAX_CONFIG_BODY: usize = 16 * 1024 * 1024;

/// Longest a client may take to send a body: slow clients cannot hold a connection forever.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A request body read whole, up to `N` bytes within [`BODY_TIMEOUT`]; past the size, 413 in
/// Kong's JSON shape, past the time, 408.
pub struct Limited<const N: usize>(pub Bytes);

impl<S: Send + Sync, const N: usize> axum::extract::FromRequest<S> for Limited<N> {
    type Rejection = axum::response::Response;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        use http_body_util::BodyExt;
        let refuse = |status: http::StatusCode, msg: String| {
            let body = serde_json::json!({ "message": msg }).to_string();
            (
                status,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                body,
            )
                .into_response()
        };
        let too_large = || {
            refuse(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body too large: the limit is {N} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > N as u64) {
            return Err(too_large());
        }
        let read = http_body_util::Limited::new(req.into_body(), N).collect();
        match tokio::time::timeout(BODY_TIMEOUT, read).await {
            Err(_) => Err(refuse(
                http::StatusCode::REQUEST_TIMEOUT,
                "Timed out reading the request body".into(),
            )),
            Ok(Ok(c)) => Ok(Limited(c.to_bytes())),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(_)) => Err(refuse(
                http::StatusCode::BAD_REQUEST,
                "Cannot read the request body".into(),
            )),
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any body with any of the content types the Admin API reads parses to an object or
        /// fails with a message: never a panic, never a deep value.
        #[test]
        fn fuzz_bodies_parse_or_fail(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            text in "[ -~]{0,300}",
            ct in proptest::sample::select(vec![
                "application/json", "application/x-www-form-urlencoded", "", "multipart/form-data",
            ]),
        ) {
            let mut h = HeaderMap::new();
            if !ct.is_empty() {
                h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            }
            for b in [Bytes::from(body), Bytes::from(text)] {
                if let Ok(v) = parse(&h, &b) {
                    prop_assert!(v.is_object());
                }
            }
        }
    }
}
