//! The Raft network: openraft's RPCs (append, vote, snapshot) as HTTP/1.1 POSTs with bincode
//! bodies to the peer's `--cluster-listen`, over one pooled keep-alive client. A refused
//! connection or a timeout reports the peer unreachable (openraft backs off); an error the peer
//! returns is passed through as a remote error.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
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

/// HTTP client between nodes.
pub type Client = HyperClient<HttpConnector, Full<Bytes>>;

/// A pooled client for calls between nodes.
pub fn client() -> Client {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_secs(1)));
    conn.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // Below the peers' 10 s idle limit: never reuse a connection the peer is closing.
        .pool_idle_timeout(Duration::from_secs(8))
        .build(conn)
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

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

/// POSTs `body` to `http://{addr}{path}` and returns the answer's bytes.
pub async fn post(
    client: &Client,
    addr: &str,
    path: &str,
    body: Vec<u8>,
    ttl: Duration,
) -> Result<Bytes, CallError> {
    let req = Request::post(format!("http://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CallError::BadAnswer(addr.to_string(), e.to_string()))?;
    let fut = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| CallError::Unreachable(addr.to_string(), e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
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
        let bytes = match post(&self.client, &self.addr, path, enc(req), ttl).await {
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
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("/raft/append", &rpc, option.hard_ttl()).await
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

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    dec(b)
}
