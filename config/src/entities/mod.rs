//! The entities, one declaration per file (the struct as Kong's Admin API prints it, and its
//! [`crate::schema::Declared`] implementation), and the registry: the list below, one line
//! per type, from which [`Entity`] and [`EntityKind`] are made. A plugin's credential lives in
//! the plugin's folder (`plugins/<name>/credential.rs`) and is listed here with its path.
//!
//! Order matters for stored data: commands, log entries and snapshots encode an entity by its
//! position here, so new types go at the end and none is ever removed or moved.

use serde_json::Value;
use uuid::Uuid;

use crate::registry::registry;
use crate::schema::{Declared, FieldRef};

registry! {
    Service(service::Service),
    Route(route::Route),
    Consumer(consumer::Consumer),
    KeyAuth(key_auth::KeyAuthCredential) in "../../../plugins/key_auth/credential.rs",
    Plugin(plugin::Plugin),
    Acl(acl::Acl) in "../../../plugins/acl/credential.rs",
    Upstream(upstream::Upstream),
    Target(target::Target),
    Certificate(certificate::Certificate),
    Sni(sni::Sni),
    CaCertificate(ca_certificate::CaCertificate),
    BasicAuth(basic_auth::BasicAuthCredential) in "../../../plugins/basic_auth/credential.rs",
    Jwt(jwt::JwtSecret) in "../../../plugins/jwt/credential.rs",
    HmacAuth(hmac_auth::HmacAuthCredential) in "../../../plugins/hmac_auth/credential.rs",
}

pub use sni::check_wildcard_host;
pub use target::DEFAULT_TARGET_PORT;
pub use upstream::{default_healthchecks, ActiveCheck, Healthchecks, PassiveCheck};
