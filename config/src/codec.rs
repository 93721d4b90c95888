//! The binary encoding of commands, log entries and snapshots (bincode, standard config).

/// Error decoding a command from bytes.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode command: {0}")]
pub struct DecodeError(pub(crate) String);

pub(crate) fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
}
