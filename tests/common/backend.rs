//! Backends whose behaviour a test switches while they run: answering with their name,
//! answering slowly, hanging (accepting and never answering), or down (the port closed, so
//! connects are refused). Each counts the requests it answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Answer = 0,
    /// Answers after [`SLOW`].
    Slow = 1,
    /// Accepts and reads, never answers.
    Hung = 2,
    /// Answers 500.
    Failing = 3,
}

pub const SLOW: Duration = Duration::from_millis(400);

struct Shared {
    name: String,
    mode: AtomicU8,
    answered: AtomicU64,
    /// Requests for `/health` (probes) answered.
    probes: AtomicU64,
}

/// A backend on a fixed loopback port; [`Backend::stop`] closes the port, [`Backend::restart`]
/// opens it again.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A TLS acceptor presenting `cert` (with its key), asking clients for a certificate when
/// `clients` is given.
fn acceptor(
    cert: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> tokio_rustls::TlsAcceptor {
    let key = rustls::pki_types::PrivateKeyDer::try_from(key_der).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap();
    let builder = match clients {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(vec![cert], key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_with(name, None).await
    }

    /// A backend that speaks HTTPS with a self-signed certificate for `localhost`.
    pub async fn start_tls(name: &str) -> Backend {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let tls = acceptor(cert.cert.der().clone(), cert.key_pair.serialize_der(), None);
        Backend::start_with(name, Some(tls)).await
    }

    /// A backend that speaks HTTPS with a certificate for `localhost` signed by a CA made for
    /// it; returns the CA certificate (PEM) too.
    pub async fn start_tls_signed(name: &str) -> (Backend, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let tls = acceptor(leaf.der().clone(), leaf_key.serialize_der(), None);
        let b = Backend::start_with(name, Some(tls)).await;
        (b, ca.pem())
    }

    /// A backend that speaks HTTPS (a self-signed certificate for `localhost`) and accepts
    /// only clients presenting a certificate signed by `client_ca` (PEM).
    pub async fn start_tls_requiring_client(name: &str, client_ca: &str) -> Backend {
        use rustls::pki_types::pem::PemObject;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let tls = acceptor(
            cert.cert.der().clone(),
            cert.key_pair.serialize_der(),
            Some(verifier),
        );
        Backend::start_with(name, Some(tls)).await
    }

    async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            mode: AtomicU8::new(Mode::Answer as u8),
            answered: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        });
        let b = Backend {
            addr,
            shared,
            tls,
            task: Mutex::new(None),
        };
        b.serve(listener);
        b
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                match tls.clone() {
                    None => {
                        conns.spawn(connection(s, shared));
                    }
                    Some(acceptor) => {
                        conns.spawn(async move {
                            if let Ok(s) = acceptor.accept(s).await {
                                connection(s, shared).await;
                            }
                        });
                    }
                }
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    pub fn set(&self, m: Mode) {
        self.shared.mode.store(m as u8, Ordering::SeqCst);
    }

    pub fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::SeqCst)
    }

    pub fn probes(&self) -> u64 {
        self.shared.probes.load(Ordering::SeqCst)
    }

    /// Closes the port and every open connection: new connects are refused.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connection<S>(mut s: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head (these tests send no bodies).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let probe = head.starts_with("GET /health ");
        let mode = shared.mode.load(Ordering::SeqCst);
        let (status, body) = match mode {
            m if m == Mode::Hung as u8 => {
                // Keep the connection open and silent until the peer gives up.
                let _ = s.read(&mut chunk).await;
                std::future::pending::<()>().await;
                return;
            }
            m if m == Mode::Slow as u8 => {
                tokio::time::sleep(SLOW).await;
                ("200 OK", shared.name.clone())
            }
            m if m == Mode::Failing as u8 => ("500 Internal Server Error", shared.name.clone()),
            _ => ("200 OK", shared.name.clone()),
        };
        let host = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("host: ")
                    .or_else(|| l.strip_prefix("Host: "))
            })
            .unwrap_or("")
            .to_string();
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\nx-backend-host: {host}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        if probe {
            shared.probes.fetch_add(1, Ordering::SeqCst);
        } else {
            shared.answered.fetch_add(1, Ordering::SeqCst);
        }
    }
}
