//! `correlation-id`: gives every request an id in a header (Kong's `Kong-Request-ID` by
//! default) unless the client sent one, passes it upstream, and echoes it to the client when
//! asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::correlation_id::{CorrelationIdConfig, Generator, SCHEMA};
use uuid::Uuid;

use super::{Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = CorrelationIdConfig::parse(&p.config.0)?;
    let header = HeaderName::from_bytes(cfg.header_name.to_ascii_lowercase().as_bytes()).ok()?;
    Some(Arc::new(CorrelationId {
        id: p.id,
        header,
        generator: cfg.generator,
        echo: cfg.echo_downstream,
    }))
}

pub struct CorrelationId {
    id: Uuid,
    header: HeaderName,
    generator: Generator,
    echo: bool,
}

/// `uuid#counter`: one UUID per process (Kong: per worker) and a counter after it.
fn process_uuid() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| Uuid::new_v4().to_string())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl CorrelationId {
    fn generate(&self, ctx: &Ctx<'_>) -> Option<HeaderValue> {
        let id = match self.generator {
            Generator::Uuid => Uuid::new_v4().to_string(),
            Generator::UuidCounter => {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{}#{n}", process_uuid())
            }
            Generator::Tracker => format!(
                "{}-{}-{}-{}-{}-{:.3}",
                ctx.peer.local.ip(),
                ctx.peer.local.port(),
                std::process::id(),
                ctx.peer.connection,
                ctx.peer.requests(),
                ctx.now
            ),
        };
        HeaderValue::from_str(&id).ok()
    }
}

impl Plugin for CorrelationId {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        // Empty or blank is no id (Kong's spec: "does not preserve an already existing empty
        // header", "... with space only").
        let given = req
            .headers
            .get(&self.header)
            .filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
            .cloned();
        let id = match given {
            Some(v) => Some(v),
            None => {
                let v = self.generate(ctx);
                if let Some(v) = &v {
                    req.headers.insert(self.header.clone(), v.clone());
                }
                v
            }
        };
        if let (true, Some(v)) = (self.echo, id) {
            ctx.response_headers.push((self.header.clone(), v));
        }
        Flow::Continue
    }
}
