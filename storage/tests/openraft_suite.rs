//! openraft's own storage test suite, run against our sled log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tollgate_storage::{LogStore, StateMachineStore, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = tollgate_storage::open(dir.path(), Box::new(|_, _| {}))
            .map_err(|e| openraft::StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}

/// openraft's suite never reopens a store: check that what was applied is what a restart
/// finds, including the last-applied log id (a wrong one makes a restarted node re-apply old
/// entries, or fail once the log behind its snapshot is purged).
#[tokio::test]
async fn applied_state_survives_reopen() {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use tollgate_config::entity::{Consumer, Entity};
    use tollgate_config::{Command, PutMode};

    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<Entry<TypeConfig>> = (1..=5u64)
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), i),
            payload: EntryPayload::Normal(Command::Put {
                entity: Entity::Consumer(Consumer {
                    id: uuid::Uuid::from_u128(i as u128),
                    username: Some(format!("u{i}")),
                    custom_id: None,
                    tags: None,
                    created_at: 1,
                    updated_at: 1,
                }),
                mode: PutMode::Create,
            }),
        })
        .collect();
    {
        let (_log, mut sm) = tollgate_storage::open(dir.path(), Box::new(|_, _| {})).unwrap();
        sm.apply(entries).await.unwrap();
    }
    let (_log, mut sm) = tollgate_storage::open(dir.path(), Box::new(|_, _| {})).unwrap();
    let (last, _) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(LogId::new(CommittedLeaderId::new(3, 1), 5)));
    assert_eq!(
        sm.read(|a| a.state.count(tollgate_config::EntityKind::Consumer)),
        5
    );
}
