//! The Raft network: openraft's RPCs (append, vote, snapshot) as HTTP/1.1 POSTs with bincode
//! bodies to the peer's `--cluster-listen`, over one pooled keep-alive client: HTTPS with this
//! node's cluster certificate when the cluster has credentials ([`crate::auth`]), plain HTTP
//! on loopback without. A refused connection or a timeout reports the peer unreachable
//! (openraft backs off); an error the peer returns is passed through as a remote error.
//!
//! Every size is bounded both ways: an append batch is cut to [`APPEND_BATCH_BYTES`] (a
//! single larger entry goes alone; the cut is reported to openraft as a partial success,
//! which it continues from), answers are read up to [`MAX_ANSWER_BODY`], and bincode decodes
//! with a byte limit, so a claimed length cannot make a node allocate past the limit.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Limited;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tollgate_storage::TypeConfig;

use crate::auth::RpcTls;
use crate::raft::MAX_ENTRY_BYTES;

/// Largest append request a peer accepts: one entry of the largest size always fits, with
/// room for the request's own fields.
pub const MAX_APPEND_BODY: usize = MAX_ENTRY_BYTES + 64 * 1024;
/// Appends are cut to about this many bytes (a single larger entry goes alone), so that a
/// batch of entries never takes longer to replicate than its largest entry.
pub const APPEND_BATCH_BYTES: usize = 1024 * 1024;
/// Largest answer read from a peer (a forwarded write's reply carries one entity).
pub const MAX_ANSWER_BODY: usize = MAX_ENTRY_BYTES + 64 * 1024;

/// HTTP(S) client between nodes.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    scheme: &'static str,
}

/// A pooled client for calls between nodes: HTTPS with `tls`, plain HTTP without.
pub fn client(tls: Option<&RpcTls>) -> Client {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_secs(1)));
    conn.set_nodelay(true);
    // Plain HTTP over TCP: the TLS layer is hyper-rustls's, in front of it.
    conn.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let (connector, scheme) = match tls {
        Some(t) => (
            builder
                .with_tls_config((*t.client).clone())
                .https_only()
                .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                    t.server_name.clone(),
                ))
                .enable_http1()
                .wrap_connector(conn),
            "https",
        ),
        None => {
            // Never used for TLS (plain URLs only), but the builder wants a configuration.
            let unused = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            (
                builder
                    .with_tls_config(unused)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(conn),
                "http",
            )
        }
    };
    let inner = HyperClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // Below the peers' 10 s idle limit: never reuse a connection the peer is closing.
        .pool_idle_timeout(Duration::from_secs(8))
        .build(connector);
    Client { inner, scheme }
}

/// A failure talking to a peer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    #[error("timed out calling {0}")]
    Timeout(String),
    #[error("bad answer from {0}: {1}")]
    BadAnswer(String, String),
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap_or_default()
}

/// Decodes bincode allowing at most `N` bytes of claimed lengths: a 16-byte message claiming
/// a 2^45-byte string is an error, not an allocation.
pub(crate) fn dec_limited<T: DeserializeOwned, const N: usize>(b: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(b, bincode::config::standard().with_limit::<N>())
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    dec_limited::<T, MAX_ANSWER_BODY>(b)
}

/// POSTs `body` to `http://{addr}{path}` and returns the answer's bytes.
pub async fn post(
    client: &Client,
    addr: &str,
    path: &str,
    body: Vec<u8>,
    ttl: Duration,
) -> Result<Bytes, CallError> {
    let req = Request::post(format!("{}://{addr}{path}", client.scheme))
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CallError::BadAnswer(addr.to_string(), e.to_string()))?;
    let fut = async {
        let resp = client
            .inner
            .request(req)
            .await
            .map_err(|e| CallError::Unreachable(addr.to_string(), error_chain(&e)))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BODY)
            .collect()
            .await
            .map_err(|e| CallError::Unreachable(addr.to_string(), e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(CallError::BadAnswer(
                addr.to_string(),
                format!("{status}: {}", String::from_utf8_lossy(&bytes)),
            ));
        }
        Ok(bytes)
    };
    tokio::time::timeout(ttl, fut)
        .await
        .map_err(|_| CallError::Timeout(addr.to_string()))?
}

/// An error with its causes (a TLS refusal hides two levels down in hyper's error).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Creates connections to peers.
#[derive(Clone)]
pub struct Network {
    client: Client,
}

impl Network {
    pub fn new(client: Client) -> Network {
        Network { client }
    }
}

/// A connection to one peer.
pub struct Connection {
    client: Client,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.call_encoded(path, enc(req), ttl).await
    }

    async fn call_encoded<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let bytes = match post(&self.client, &self.addr, path, body, ttl).await {
            Ok(b) => b,
            Err(e @ (CallError::Unreachable(..) | CallError::Timeout(_))) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        let answer: Result<Resp, E> = dec(&bytes).map_err(|e| {
            RPCError::Network(NetworkError::new(&CallError::BadAnswer(
                self.addr.clone(),
                e,
            )))
        })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        // Each append must arrive within openraft's deadline: send the longest prefix of the
        // batch within APPEND_BATCH_BYTES (one entry always goes), and tell openraft how far
        // it got; it continues from there.
        let mut body = enc(&rpc);
        let mut cut = false;
        while body.len() > APPEND_BATCH_BYTES && rpc.entries.len() > 1 {
            let keep = rpc.entries.len().div_ceil(2);
            rpc.entries.truncate(keep);
            body = enc(&rpc);
            cut = true;
        }
        let last = rpc.entries.last().map(|e| e.log_id);
        let resp = self
            .call_encoded("/raft/append", body, option.hard_ttl())
            .await?;
        Ok(match resp {
            AppendEntriesResponse::Success if cut => AppendEntriesResponse::PartialSuccess(last),
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call("/raft/snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("/raft/vote", &rpc, option.hard_ttl()).await
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    enc(v)
}
