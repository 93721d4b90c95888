//! `request-size-limiting`: refuses request bodies over a size. A declared `Content-Length`
//! is judged before anything is read; a body without one (chunked) is counted as it is read
//! or streamed, and cut off with the same answer once it passes the limit, so no unbounded
//! body reaches the upstream or the gateway's memory.
//!
//! Answers, as Kong's `handler.lua`: 413 `Request size limit exceeded` (417 when the client
//! sent `Expect: 100-continue`), 411 `A valid Content-Length header is required` when
//! `require_content_length` is set and the request is neither sized nor chunked. A body
//! equal to the limit passes (`length > allowed`).

use std::sync::Arc;

use http::{header, StatusCode};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::request_size_limiting::{RequestSizeLimitingConfig, SCHEMA};
use uuid::Uuid;

use super::{error_response, BodyLimit, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

const TOO_LARGE: &str = "Request size limit exceeded";

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = RequestSizeLimitingConfig::parse(&p.config.0)?;
    Some(Arc::new(RequestSizeLimiting {
        id: p.id,
        limit: cfg.limit(),
        require_length: cfg.require_content_length,
    }))
}

pub struct RequestSizeLimiting {
    id: Uuid,
    /// Bytes; `None` when `allowed_payload_size` is null (Kong then fails on every body; here
    /// nothing is limited, which the schema's default makes rare).
    limit: Option<u64>,
    require_length: bool,
}

/// Lua's `tonumber` on a header value, for the lengths a client may write.
fn declared_length(v: &http::HeaderValue) -> Option<f64> {
    let s = v.to_str().ok()?.trim();
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

impl Plugin for RequestSizeLimiting {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        let expect_continue = req
            .headers
            .get(header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        let status = if expect_continue {
            StatusCode::EXPECTATION_FAILED
        } else {
            StatusCode::PAYLOAD_TOO_LARGE
        };
        let max = self.limit.unwrap_or(u64::MAX);
        let over = |len: f64| len > max as f64;
        if let Some(len) = req.headers.get(header::CONTENT_LENGTH).and_then(declared_length) {
            if over(len) {
                return Flow::Respond(error_response(status, TOO_LARGE));
            }
            return Flow::Continue;
        }
        // Kong exempts `Transfer-Encoding: chunked`, which only HTTP/1.1 has: an HTTP/2 body
        // without a length gets the 411 too.
        let chunked = ctx.body_unsized && req.version <= http::Version::HTTP_11;
        if self.require_length && !chunked {
            return Flow::Respond(error_response(
                StatusCode::LENGTH_REQUIRED,
                "A valid Content-Length header is required",
            ));
        }
        match &ctx.body {
            // Already read for another plugin.
            Some(b) if over(b.len() as f64) => Flow::Respond(error_response(status, TOO_LARGE)),
            Some(_) => Flow::Continue,
            None => {
                // The tighter of two limits wins when several are set.
                let tighter = ctx.body_limit.is_none_or(|l| max < l.max);
                if ctx.body_unsized && tighter {
                    ctx.body_limit = Some(BodyLimit {
                        max,
                        status,
                        message: TOO_LARGE,
                    });
                }
                Flow::Continue
            }
        }
    }
}
