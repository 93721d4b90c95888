//! `ip-restriction`: refuses clients by address, as Kong 3.9.3's plugin does
//! (`kong/plugins/ip-restriction/handler.lua`): the deny list first, then the allow list,
//! IPv4 and IPv6 addresses and networks. The client address is the one the proxy worked out:
//! the peer, or what a trusted proxy (`--trusted-ips`) put in `--real-ip-header`, and
//! nothing else a client can send.

use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use ipnet::IpNet;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::ip_restriction::{parse_net, IpRestrictionConfig, SCHEMA};
use uuid::Uuid;

use super::{error_response, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = IpRestrictionConfig::parse(&p.config.0)?;
    let nets = |l: &Option<Vec<String>>| -> Option<Vec<IpNet>> {
        l.iter().flatten().map(|s| parse_net(s)).collect()
    };
    let status = cfg.status.map_or(StatusCode::FORBIDDEN, |s| {
        StatusCode::from_u16(s as u16).unwrap_or(StatusCode::FORBIDDEN)
    });
    Some(Arc::new(IpRestriction {
        id: p.id,
        allow: nets(&cfg.allow)?,
        deny: nets(&cfg.deny)?,
        status,
        message: cfg.message,
    }))
}

pub struct IpRestriction {
    id: Uuid,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    status: StatusCode,
    message: Option<String>,
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4
/// clients) is matched as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn matches(list: &[IpNet], ip: IpAddr) -> bool {
    list.iter().any(|n| n.contains(&ip))
}

impl Plugin for IpRestriction {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, _req: &mut http::request::Parts) -> Flow {
        let ip = canonical(ctx.client_ip);
        let refused = (!self.deny.is_empty() && matches(&self.deny, ip))
            || (!self.allow.is_empty() && !matches(&self.allow, ip));
        if !refused {
            return Flow::Continue;
        }
        let message = match &self.message {
            Some(m) => m.clone(),
            None => format!("IP address not allowed: {}", ctx.client_ip),
        };
        Flow::Respond(error_response(self.status, &message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_match_their_ipv4_networks() {
        let nets = vec![parse_net("10.0.0.0/8").unwrap(), parse_net("::1").unwrap()];
        assert!(matches(&nets, canonical("::ffff:10.1.2.3".parse().unwrap())));
        assert!(matches(&nets, canonical("::1".parse().unwrap())));
        assert!(!matches(&nets, canonical("11.0.0.1".parse().unwrap())));
    }
}
