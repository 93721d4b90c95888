//! Data written before entities were declared generically still loads: a snapshot, a Raft log
//! entry replacing the configuration, and one stored entity, each as encoded by version 0.4
//! (`fixtures/v0.4-encodings.txt`, made by that version from one declarative file, with the
//! file's export to compare against).

use tollgate_config::declarative::{self, Sequence};
use tollgate_config::state::StateData;
use tollgate_config::{Command, Entity, EntityKind, State};

fn fixture(name: &str) -> String {
    let text = include_str!("fixtures/v0.4-encodings.txt");
    let prefix = format!("{name}=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("fixture {name}"))
        .to_string()
}

fn bytes(name: &str) -> Vec<u8> {
    let hex = fixture(name);
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// What version 0.4 exported for the same configuration, loaded by this version.
fn expected() -> StateData {
    declarative::parse(&fixture("EXPORT"), &mut Sequence(1000)).unwrap()
}

#[test]
fn a_v04_snapshot_loads() {
    let data = StateData::decode(&bytes("SNAPSHOT")).unwrap();
    assert_eq!(data.count(EntityKind::Plugin), 2);
    assert_eq!(data, expected());
    State::from_data(data).unwrap();
}

#[test]
fn a_v04_replace_command_applies() {
    let cmd = Command::decode(&bytes("REPLACE")).unwrap();
    assert!(matches!(cmd, Command::ReplaceV1(_)));
    let mut st = State::default();
    st.apply(cmd).unwrap();
    assert_eq!(st.data(), &expected());
}

#[test]
fn a_v04_stored_entity_decodes() {
    let b = bytes("PLUGIN");
    let (e, _): (Entity, usize) =
        bincode::serde::decode_from_slice(&b, bincode::config::standard()).unwrap();
    let Entity::Plugin(p) = e else {
        panic!("not a plugin: {e:?}")
    };
    assert_eq!(p.name, "rate-limiting");
}

#[test]
fn snapshots_round_trip_in_the_current_format() {
    let data = expected();
    assert_eq!(StateData::decode(&data.encode()).unwrap(), data);
}
