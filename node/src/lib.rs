//! The Tollgate node: the proxy data plane, the plugins, the Admin API, metrics, and the glue
//! that keeps the data plane's configuration snapshot in step with the replicated state.
//!
//! The request path reads configuration only through [`snapshot::SnapshotHandle`], an atomic
//! pointer swapped after every applied change: it never takes a lock on configuration.

pub mod admin;
pub mod balancer;
pub mod cli;
pub mod cluster_cmd;
pub mod echo;
pub mod k8s_cmd;
pub mod metrics;
pub mod node;
pub mod plugins;
pub mod proxy;
pub mod ratelimit;
pub mod serve;
pub mod snapshot;
pub mod tls;
