//! Prints what a node's Raft storage holds: `cargo run -p tollgate-storage --example inspect -- DIR`.

use openraft::storage::RaftLogStorage;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = std::env::args().nth(1).expect("data dir (…/raft)");
    let (mut log, sm) =
        tollgate_storage::open(std::path::Path::new(&dir), Box::new(|_, _| {})).expect("open");
    let st = log.get_log_state().await.expect("log state");
    println!(
        "log state: last_purged {:?} last {:?}",
        st.last_purged_log_id, st.last_log_id
    );
    println!("log entries held: {}", log.len());
    println!(
        "committed: {:?}",
        log.read_committed().await.expect("committed")
    );
    println!("vote: {:?}", log.read_vote().await.expect("vote"));
    println!("state machine last applied: {}", sm.last_applied_index());
}
