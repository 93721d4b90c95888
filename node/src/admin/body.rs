//! Reading Admin API request bodies: JSON, or form-encoded as Kong's curl examples send them.

use bytes::Bytes;
use http::{header, HeaderMap};
use serde_json::Value;
use tollgate_config::lenient::form_to_json;

/// Why a body could not be read, with Kong's message.
pub struct BodyError(pub &'static str);

/// Parses a body into a JSON object. An empty body is an empty object.
pub fn parse(headers: &HeaderMap, bytes: &Bytes) -> Result<Value, BodyError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    if ct.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(bytes).into_owned().collect();
        return Ok(form_to_json(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
    }
    if ct.starts_with("multipart/") {
        return Err(BodyError(
            "multipart bodies are not supported; send JSON or form-encoded data",
        ));
    }
    // JSON, declared or not (curl -d without a content type sends form encoding, handled above).
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(BodyError("Cannot parse JSON body: expected an object")),
        Err(_) => Err(BodyError("Cannot parse JSON body")),
    }
}
