//! `acl`: lets a request through by the groups of its consumer, as Kong 3.9.3's plugin does
//! (`kong/plugins/acl/handler.lua`): an allow or a deny list, checked after authentication
//! (priority 950), the consumer's groups sent upstream in `X-Consumer-Groups`.
//!
//! Groups come from the consumer's `acls` in the configuration the request is served with, so
//! removing a consumer from a group applies on every node as soon as the change is applied
//! there.

use std::sync::Arc;

use http::StatusCode;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::acl::{AclConfig, SCHEMA};
use uuid::Uuid;

use super::auth::X_CONSUMER_GROUPS;
use super::{error_response, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = AclConfig::parse(&p.config.0)?;
    let deny = cfg.deny.as_ref().is_some_and(|d| !d.is_empty());
    let groups = if deny { cfg.deny.clone() } else { cfg.allow.clone() };
    Some(Arc::new(Acl {
        id: p.id,
        deny,
        groups: groups.unwrap_or_default(),
        hide_groups_header: cfg.hide_groups_header,
    }))
}

pub struct Acl {
    id: Uuid,
    /// A deny list (otherwise an allow list).
    deny: bool,
    groups: Vec<String>,
    hide_groups_header: bool,
}

const FORBIDDEN: &str = "You cannot consume this service";

impl Plugin for Acl {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        let Some(consumer) = ctx.consumer.clone() else {
            // No consumer: a credential without one is a 403, nothing at all a 401.
            return Flow::Respond(if ctx.credential.is_some() {
                error_response(StatusCode::FORBIDDEN, FORBIDDEN)
            } else {
                error_response(StatusCode::UNAUTHORIZED, "Unauthorized")
            });
        };
        if consumer.groups.is_empty() && !self.deny {
            return Flow::Respond(if ctx.credential.is_some() {
                error_response(StatusCode::FORBIDDEN, FORBIDDEN)
            } else {
                error_response(StatusCode::UNAUTHORIZED, "Unauthorized")
            });
        }
        let member = consumer.groups.iter().any(|g| self.groups.contains(g));
        if member == self.deny {
            return Flow::Respond(error_response(StatusCode::FORBIDDEN, FORBIDDEN));
        }
        if !self.hide_groups_header {
            // With no groups Kong sets the header to "", which nginx drops: none is sent.
            if let Some(v) = consumer.groups_header.clone() {
                req.headers.insert(X_CONSUMER_GROUPS.clone(), v);
            }
        }
        Flow::Continue
    }
}
