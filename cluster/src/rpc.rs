//! The cluster listener's endpoints: openraft's RPCs (bincode) and the internal calls nodes
//! make to the leader (JSON): forwarded writes, read indexes and member removal.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use tollgate_config::Command;
use tollgate_storage::TypeConfig;

use crate::network::{decode, encode};
use crate::raft::{ClusterNode, ForwardReply, ProposeError};

/// Largest RPC body (snapshot chunks are 3 MiB by default; appends are bounded by openraft).
const MAX_RPC_BODY: usize = 64 * 1024 * 1024;

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

fn json<T: Serialize>(v: &T) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, serde_json::to_vec(v).unwrap_or_default())
}

/// Handles one request on the cluster listener.
pub async fn handle(node: Arc<ClusterNode>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, b"POST only".to_vec());
    }
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_RPC_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, b"body too large".to_vec()),
    };
    let bad = |e: String| reply(StatusCode::BAD_REQUEST, e.into_bytes());
    match path.as_str() {
        "/raft/append" => match decode::<AppendEntriesRequest<TypeConfig>>(&body) {
            Ok(r) => reply(StatusCode::OK, encode(&node.raft.append_entries(r).await)),
            Err(e) => bad(e),
        },
        "/raft/vote" => match decode::<VoteRequest<u64>>(&body) {
            Ok(r) => reply(StatusCode::OK, encode(&node.raft.vote(r).await)),
            Err(e) => bad(e),
        },
        "/raft/snapshot" => match decode::<InstallSnapshotRequest<TypeConfig>>(&body) {
            Ok(r) => reply(StatusCode::OK, encode(&node.raft.install_snapshot(r).await)),
            Err(e) => bad(e),
        },
        "/cluster/forward" => match serde_json::from_slice::<Command>(&body) {
            Ok(cmd) => {
                let (result, index) = match node.propose_here(cmd).await {
                    Ok((a, i)) => (Ok(a), i),
                    Err(e) => (Err(e), 0),
                };
                json(&ForwardReply { result, index })
            }
            Err(e) => bad(e.to_string()),
        },
        "/cluster/read-index" => json(&node.read_index_here().await),
        "/cluster/remove" => match String::from_utf8_lossy(&body).parse::<u64>() {
            Ok(id) => json(&node.remove_member(id).await),
            Err(_) => json(&Err::<(), _>(ProposeError::Internal("bad node id".into()))),
        },
        _ => reply(StatusCode::NOT_FOUND, b"unknown cluster endpoint".to_vec()),
    }
}
