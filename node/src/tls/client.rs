//! Client-side TLS towards upstreams: a service's settings (Kong's `tls_verify`,
//! `tls_verify_depth`, `ca_certificates`, `client_certificate`) compiled into one rustls
//! config, and the connectors active health checks use.
//!
//! As Kong: `tls_verify` unset or false does not verify (nginx's `proxy_ssl_verify off`); on,
//! the upstream's certificate must chain to the service's CA certificates, or to the system's
//! roots when it lists none. The SNI sent is the final Host (Kong's `$upstream_host`), without
//! its port; an IP literal sends none and is checked against the certificate's IP names.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tollgate_config::entities::{CaCertificate, Certificate, Service};
use tollgate_config::{x509, State};

use super::provider;
use super::verify::{system_roots, AnyCertificate, DepthLimited};

/// How connections for one service are secured; pooled connections are kept apart per
/// settings and per SNI (see [`crate::proxy::upstream::Pool`]).
pub struct UpstreamTls {
    pub connector: TlsConnector,
    /// Unique for the life of the process: pooled connections remember the settings they
    /// were made with by this id (an address could be reused by later settings).
    pub id: u64,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Why a service's TLS settings cannot be used; requests to it fail closed with a 502.
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingsError {
    #[error("client certificate {0} cannot be used: {1}")]
    ClientCertificate(uuid::Uuid, String),
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

/// The settings of an `https` service.
pub fn for_service(st: &State, s: &Service) -> Result<UpstreamTls, TlsSettingsError> {
    let p = provider();
    let builder =
        ClientConfig::builder_with_provider(p.clone()).with_safe_default_protocol_versions()?;
    let builder = if s.tls_verify == Some(true) {
        let roots = match &s.ca_certificates {
            Some(ids) if !ids.is_empty() => {
                let mut roots = RootCertStore::empty();
                for ca in ids.iter().filter_map(|id| st.one::<CaCertificate>(*id)) {
                    if let Ok(parsed) = x509::certificate(&ca.cert) {
                        for c in parsed.chain {
                            let _ = roots.add(c);
                        }
                    }
                }
                Arc::new(roots)
            }
            _ => system_roots(),
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, p.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match s.tls_verify_depth
        {
            Some(d) => Arc::new(DepthLimited {
                inner: webpki,
                depth: d.into(),
            }),
            None => webpki,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(p)))
    };
    let config = match client_certificate(st, s).and_then(|id| st.one::<Certificate>(id)) {
        Some(c) => {
            let bad = |m: String| TlsSettingsError::ClientCertificate(c.id, m);
            let chain = x509::certificate(&c.cert).map_err(bad)?.chain;
            let key = x509::key(&c.key).map_err(bad)?.der;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = config;
    if s.protocol == tollgate_config::Protocol::Grpcs {
        // gRPC needs HTTP/2, which a TLS upstream agrees to through ALPN.
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    Ok(UpstreamTls {
        connector: TlsConnector::from(Arc::new(config)),
        id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    })
}

/// The certificate a service presents to its upstream: its own `client_certificate`, else
/// that of the upstream entity its host names (Kong's `upstream_ssl.lua`).
pub fn client_certificate(st: &State, s: &Service) -> Option<uuid::Uuid> {
    s.client_certificate.map(|fk| fk.id).or_else(|| {
        st.all::<tollgate_config::entities::Upstream>()
            .find(|u| u.name == s.host)
            .and_then(|u| u.client_certificate.map(|fk| fk.id))
    })
}

/// The name for SNI and verification from a Host value (`name[:port]`, `[v6]:port`).
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let bare = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    ServerName::try_from(bare.to_string()).ok()
}

/// The connector for `https` health probes, verifying (system roots) or not; built once each.
pub fn probe_connector(verify: bool) -> TlsConnector {
    static VERIFYING: OnceLock<TlsConnector> = OnceLock::new();
    static ANY: OnceLock<TlsConnector> = OnceLock::new();
    let cell = if verify { &VERIFYING } else { &ANY };
    cell.get_or_init(|| {
        let p = provider();
        let builder = ClientConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let config = if verify {
            builder
                .with_root_certificates(system_roots())
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(p)))
                .with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    })
    .clone()
}
