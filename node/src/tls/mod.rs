//! TLS on both sides of the proxy, with rustls.
//!
//! - [`server`]: the certificates the listeners present, chosen per handshake from the current
//!   configuration snapshot in Kong's SNI order, and the default certificate.
//! - [`client`]: what the proxy and active health checks use towards upstreams: verification
//!   against CA certificates or the system's roots (or none), client certificates, SNI.
//! - [`verify`]: the certificate verifiers those are built from.

pub mod client;
pub mod server;
pub mod verify;

use std::sync::Arc;

/// The one crypto provider (ring) every config is built with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
