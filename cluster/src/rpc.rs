//! The cluster listener's endpoints: openraft's RPCs and the internal calls nodes make to the
//! leader: forwarded writes, read indexes and member removal; and notices between members
//! ([`crate::notice`]). All bincode but the answers to
//! internal calls (JSON).
//!
//! Behind TLS with client certificates when the cluster has credentials (only members reach
//! these handlers), and bounded either way:
//! - each endpoint reads at most its own body size ([`limit`]), refused from the declared
//!   length before reading, within [`BODY_TIMEOUT`];
//! - bodies in flight across all connections share [`MAX_INFLIGHT_BYTES`]; past it a request
//!   is answered 503 at once (the sender retries), so slow or many senders cannot grow memory;
//! - bincode decodes with the endpoint's limit (a claimed length cannot allocate more);
//! - a snapshot chunk must continue what was received of the snapshot being streamed (no
//!   seek far past the end, which would allocate the gap; a chunk of another snapshot must
//!   start at 0, which openraft checks itself) and a snapshot stays under
//!   [`MAX_SNAPSHOT_BYTES`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use tokio::sync::Semaphore;
use tollgate_config::Command;
use tollgate_storage::TypeConfig;

use crate::network::{dec_limited, encode, MAX_APPEND_BODY};
use crate::raft::{ClusterNode, ForwardReply, ProposeError, MAX_ENTRY_BYTES};

/// Snapshot chunk size the leader sends (openraft's `snapshot_max_chunk_size`).
pub const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Largest snapshot a node accepts (it is held in memory while it arrives).
pub const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024 * 1024;
/// Bytes of request bodies held at once across every cluster connection.
pub const MAX_INFLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Longest a peer may take to send one body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

const VOTE_BODY: usize = 64 * 1024;
const SNAPSHOT_BODY: usize = SNAPSHOT_CHUNK + 64 * 1024;
const FORWARD_BODY: usize = MAX_ENTRY_BYTES + 64 * 1024;
const SMALL_BODY: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endpoint {
    Append,
    Vote,
    Snapshot,
    Forward,
    ReadIndex,
    Remove,
    Notice,
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/raft/append" => Endpoint::Append,
            "/raft/vote" => Endpoint::Vote,
            "/raft/snapshot" => Endpoint::Snapshot,
            "/cluster/forward" => Endpoint::Forward,
            "/cluster/read-index" => Endpoint::ReadIndex,
            "/cluster/remove" => Endpoint::Remove,
            "/cluster/notice" => Endpoint::Notice,
            _ => return None,
        })
    }
}

/// Largest body each endpoint reads.
fn limit(e: Endpoint) -> usize {
    match e {
        Endpoint::Append => MAX_APPEND_BODY,
        Endpoint::Vote => VOTE_BODY,
        Endpoint::Snapshot => SNAPSHOT_BODY,
        Endpoint::Forward => FORWARD_BODY,
        Endpoint::ReadIndex | Endpoint::Remove => SMALL_BODY,
        Endpoint::Notice => crate::notice::MAX_NOTICE,
    }
}

/// Shared bounds of the cluster listener.
pub struct Intake {
    /// In KiB, so one permit count covers [`MAX_INFLIGHT_BYTES`].
    budget: Arc<Semaphore>,
    /// The snapshot being received, and how many bytes of it arrived in order.
    snapshot: Mutex<Option<(String, u64)>>,
}

impl Default for Intake {
    fn default() -> Intake {
        Intake {
            budget: Arc::new(Semaphore::new(MAX_INFLIGHT_BYTES / 1024)),
            snapshot: Mutex::new(None),
        }
    }
}

impl Intake {
    /// Whether a chunk may be handed to openraft: within the cap, and, for the snapshot being
    /// received, starting within what arrived (a retry may resend the last chunk).
    fn check_chunk(&self, id: &str, offset: u64, len: usize) -> Result<(), String> {
        let end = offset.saturating_add(len as u64);
        if end > MAX_SNAPSHOT_BYTES {
            return Err(format!(
                "snapshot larger than {MAX_SNAPSHOT_BYTES} bytes refused"
            ));
        }
        let cur = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        match &*cur {
            Some((cur_id, received)) if cur_id == id && offset > *received => Err(format!(
                "snapshot chunk at {offset} leaves a gap after {received} bytes"
            )),
            _ => Ok(()),
        }
    }

    /// Notes a chunk openraft accepted: it continues the current snapshot, or (at offset 0)
    /// starts a new one.
    fn chunk_accepted(&self, id: &str, offset: u64, len: usize) {
        let end = offset.saturating_add(len as u64);
        let mut cur = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *cur {
            Some((cur_id, received)) if cur_id == id => *received = (*received).max(end),
            _ if offset == 0 => *cur = Some((id.to_string(), end)),
            _ => {}
        }
    }
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

fn json<T: Serialize>(v: &T) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, serde_json::to_vec(v).unwrap_or_default())
}

/// Reads a body within `max` bytes, the shared budget and [`BODY_TIMEOUT`].
async fn read_body(
    intake: &Intake,
    req: Request<Incoming>,
    max: usize,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), Response<Full<Bytes>>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {max} bytes").into_bytes(),
        ));
    }
    // Reserve what the body may take: its declared length, else the endpoint's limit.
    let kib = declared.unwrap_or(max as u64).div_ceil(1024).max(1) as u32;
    let Ok(permit) = intake.budget.clone().try_acquire_many_owned(kib) else {
        return Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            b"cluster listener busy: too many bodies in flight".to_vec(),
        ));
    };
    let read = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => Ok((b.to_bytes(), permit)),
        Ok(Err(_)) => Err(reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {max} bytes or cut short").into_bytes(),
        )),
        Err(_) => Err(reply(
            StatusCode::REQUEST_TIMEOUT,
            b"body not received in time".to_vec(),
        )),
    }
}

/// Handles one request on the cluster listener.
pub async fn handle(node: Arc<ClusterNode>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, b"POST only".to_vec());
    }
    let Some(endpoint) = Endpoint::of(req.uri().path()) else {
        return reply(StatusCode::NOT_FOUND, b"unknown cluster endpoint".to_vec());
    };
    let (body, _permit) = match read_body(&node.intake, req, limit(endpoint)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bad = |e: String| reply(StatusCode::BAD_REQUEST, e.into_bytes());
    match endpoint {
        Endpoint::Append => {
            match dec_limited::<AppendEntriesRequest<TypeConfig>, MAX_APPEND_BODY>(&body) {
                Ok(r) => reply(StatusCode::OK, encode(&node.raft.append_entries(r).await)),
                Err(e) => bad(e),
            }
        }
        Endpoint::Vote => match dec_limited::<VoteRequest<u64>, VOTE_BODY>(&body) {
            Ok(r) => reply(StatusCode::OK, encode(&node.raft.vote(r).await)),
            Err(e) => bad(e),
        },
        Endpoint::Snapshot => {
            match dec_limited::<InstallSnapshotRequest<TypeConfig>, SNAPSHOT_BODY>(&body) {
                Ok(r) => {
                    let (id, offset, len) = (r.meta.snapshot_id.clone(), r.offset, r.data.len());
                    if let Err(e) = node.intake.check_chunk(&id, offset, len) {
                        return bad(e);
                    }
                    let answer = node.raft.install_snapshot(r).await;
                    if answer.is_ok() {
                        node.intake.chunk_accepted(&id, offset, len);
                    }
                    reply(StatusCode::OK, encode(&answer))
                }
                Err(e) => bad(e),
            }
        }
        Endpoint::Forward => match dec_limited::<Command, FORWARD_BODY>(&body) {
            Ok(cmd) => {
                let (result, index) = match node.propose_here(cmd).await {
                    Ok((a, i)) => (Ok(a), i),
                    Err(e) => (Err(e), 0),
                };
                json(&ForwardReply { result, index })
            }
            Err(e) => bad(e),
        },
        Endpoint::ReadIndex => json(&node.read_index_here().await),
        Endpoint::Remove => match String::from_utf8_lossy(&body).parse::<u64>() {
            Ok(id) => json(&node.remove_member(id).await),
            Err(_) => json(&Err::<(), _>(ProposeError::Internal("bad node id".into()))),
        },
        Endpoint::Notice => match node.handle_notice(&body) {
            Some(answer) => reply(StatusCode::OK, answer),
            None => reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                b"notice not handled".to_vec(),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes on any endpoint decode to a message or an error: never a panic, and no
        /// claimed length allocates past the endpoint's limit.
        #[test]
        fn fuzz_rpc_bodies_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..512), lie in any::<u64>()) {
            let mut claimed = vec![0xfdu8];
            claimed.extend_from_slice(&lie.to_le_bytes());
            claimed.extend_from_slice(&bytes);
            for b in [&bytes, &claimed] {
                let _ = dec_limited::<AppendEntriesRequest<TypeConfig>, MAX_APPEND_BODY>(b);
                let _ = dec_limited::<VoteRequest<u64>, VOTE_BODY>(b);
                let _ = dec_limited::<InstallSnapshotRequest<TypeConfig>, SNAPSHOT_BODY>(b);
                let _ = dec_limited::<Command, FORWARD_BODY>(b);
            }
        }

        #[test]
        fn fuzz_snapshot_offsets_stay_bounded(chunks in proptest::collection::vec((0u64..4, any::<u64>(), 0usize..4096), 0..40)) {
            let intake = Intake::default();
            for (id, offset, len) in chunks {
                let id = id.to_string();
                if intake.check_chunk(&id, offset, len).is_ok() {
                    intake.chunk_accepted(&id, offset, len);
                    let cur = intake.snapshot.lock().unwrap();
                    prop_assert!(cur.as_ref().is_none_or(|(_, n)| *n <= MAX_SNAPSHOT_BYTES));
                }
            }
        }
    }

    #[test]
    fn snapshot_chunks_must_continue_what_arrived() {
        let i = Intake::default();
        let accept = |id: &str, offset: u64, len: usize| {
            let r = i.check_chunk(id, offset, len);
            if r.is_ok() {
                i.chunk_accepted(id, offset, len);
            }
            r
        };
        assert!(accept("s1", 0, 100).is_ok());
        assert!(accept("s1", 100, 100).is_ok());
        // A retry of the last chunk is fine; a seek far ahead would allocate the gap.
        assert!(accept("s1", 100, 100).is_ok());
        assert!(accept("s1", 1 << 40, 1).is_err());
        assert!(accept("s1", 300, 1).is_err());
        // Another snapshot's chunk goes to openraft, which refuses a start past 0 itself
        // (and so does not switch streams); at 0 it starts a new one.
        assert!(i.check_chunk("s2", 5, 1).is_ok());
        i.chunk_accepted("s2", 5, 1);
        assert!(accept("s1", 300, 1).is_err(), "still streaming s1");
        assert!(accept("s2", 0, 1).is_ok());
        assert!(accept("s2", 1000, 1).is_err());
        assert!(accept("s3", 0, MAX_SNAPSHOT_BYTES as usize + 1).is_err());
    }

    #[test]
    fn claimed_lengths_cannot_allocate_past_the_limit() {
        // A string claiming 2^45 bytes (bincode varint: 0xfd then a u64), 16 bytes in all:
        // this aborted a node with an allocation of 32 TiB.
        let mut evil = vec![0xfdu8];
        evil.extend_from_slice(&(1u64 << 45).to_le_bytes());
        evil.extend_from_slice(&[0u8; 7]);
        assert!(dec_limited::<String, VOTE_BODY>(&evil).is_err());
        assert!(dec_limited::<InstallSnapshotRequest<TypeConfig>, SNAPSHOT_BODY>(&evil).is_err());
        // An append (vote 1/1 committed, no previous entry) claiming 2^45 entries.
        let mut append = vec![1u8, 1, 1, 0, 0xfd];
        append.extend_from_slice(&(1u64 << 45).to_le_bytes());
        assert!(dec_limited::<AppendEntriesRequest<TypeConfig>, MAX_APPEND_BODY>(&append).is_err());
        assert!(dec_limited::<Command, FORWARD_BODY>(&evil).is_err());
    }
}
