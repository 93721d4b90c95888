//! The command line: `tollgate node ...` and `tollgate echo ...`. Every flag also reads a
//! `TOLLGATE_*` environment variable, so containers can be configured without arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A clustered API gateway with Kong's Admin API and no database"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TOLLGATE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log filter (tracing's env-filter syntax, e.g. `info` or `tollgate=debug`).
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "TOLLGATE_LOG_LEVEL"
    )]
    pub log_level: String,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, global = true, env = "TOLLGATE_WORKER_THREADS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a gateway node.
    Node(Box<NodeArgs>),
    /// Run a small backend that answers with what it received (for demos and tests).
    Echo(EchoArgs),
    /// Make cluster credentials.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Kong Ingress Controller manifests as configuration.
    #[command(subcommand)]
    K8s(K8sCommand),
}

/// What the Kubernetes translation reads.
#[derive(Debug, Clone, Args)]
pub struct K8sInput {
    /// The manifests: multi-document YAML (`-` for standard input).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// The ingress class served, as the controller's `--ingress-class`.
    #[arg(long, default_value = "kong")]
    pub ingress_class: String,
    /// Addresses for a Service when running outside Kubernetes, repeatable:
    /// `<service>.<namespace>=<host:port>[,<host:port>…]`.
    #[arg(long = "backend")]
    pub backends: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Print the Kong declarative file the Kong Ingress Controller would make of the manifests.
    Translate {
        #[command(flatten)]
        input: K8sInput,
        /// Output format.
        #[arg(long, value_enum, default_value = "yaml")]
        output: K8sOutput,
    },
    /// Load the manifests into a running cluster, replacing what an earlier apply of the same
    /// set made and leaving everything else alone.
    Apply {
        #[command(flatten)]
        input: K8sInput,
        /// The Admin API of any node (http://host:port).
        #[arg(
            long,
            default_value = "http://127.0.0.1:8001",
            env = "TOLLGATE_ADMIN_URL"
        )]
        admin: String,
        /// The Admin API token (`Kong-Admin-Token`).
        #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// The name of this set of manifests: what it made is tagged `k8s-apply:<set>`, and
        /// the next apply of the same set replaces exactly that.
        #[arg(long, default_value = "default")]
        set: String,
        /// Apply even when the manifests translate to nothing, deleting everything the set
        /// made (without it, an empty translation, a wrong file or --ingress-class, is refused).
        #[arg(long)]
        allow_empty: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum K8sOutput {
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print a new cluster secret (a line for --cluster-secret-file).
    Secret,
    /// Make a cluster CA and node certificates for --cluster-tls-cert/-key/-ca.
    Certs {
        /// How many node certificates (node-1.pem … node-N.pem).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        nodes: u32,
        /// Directory to write into (created; existing files are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The name every node certificate carries (--cluster-tls-server-name).
        #[arg(long, default_value = "tollgate-cluster")]
        server_name: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// This node's id in the cluster (unique, > 0).
    #[arg(long, default_value_t = 1, env = "TOLLGATE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// Where configuration is stored; created on first start.
    #[arg(long, default_value = "./tollgate-data", env = "TOLLGATE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Proxy listener (client traffic).
    #[arg(long, default_value = "0.0.0.0:8000", env = "TOLLGATE_PROXY_LISTEN")]
    pub proxy_listen: SocketAddr,
    /// TLS proxy listener (HTTP/1.1 and HTTP/2), Kong's `8443 ssl http2`; `off` disables it.
    #[arg(long, default_value = "0.0.0.0:8443", env = "TOLLGATE_PROXY_LISTEN_TLS", value_parser = listen_or_off)]
    pub proxy_listen_tls: Listen,
    /// TLS Admin API listener (Kong's `8444 ssl http2`), with the same token and checks as
    /// the plain one; `off` disables it.
    #[arg(long, default_value = "127.0.0.1:8444", env = "TOLLGATE_ADMIN_LISTEN_TLS", value_parser = listen_or_off)]
    pub admin_listen_tls: Listen,
    /// The default certificate (PEM chain) for clients whose SNI matches no configured one,
    /// and for the Admin API (Kong's `ssl_cert`). Without it, a self-signed certificate is
    /// made on first start and kept in the data dir.
    #[arg(long, env = "TOLLGATE_SSL_CERT", requires = "ssl_cert_key")]
    pub ssl_cert: Option<PathBuf>,
    /// The private key of --ssl-cert (PEM; Kong's `ssl_cert_key`).
    #[arg(long, env = "TOLLGATE_SSL_CERT_KEY", requires = "ssl_cert")]
    pub ssl_cert_key: Option<PathBuf>,
    /// Admin API listener. Loopback by default; any other address requires --admin-token.
    #[arg(long, default_value = "127.0.0.1:8001", env = "TOLLGATE_ADMIN_LISTEN")]
    pub admin_listen: SocketAddr,
    /// Token required on every Admin API request (`Kong-Admin-Token` or `Authorization: Bearer`).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Host names the Admin API answers to, comma-separated, besides IP literals, `localhost`
    /// and --advertise-addr (a request naming another host is refused: DNS rebinding). `*`
    /// accepts any.
    #[arg(long, env = "TOLLGATE_ADMIN_HOSTS", value_delimiter = ',')]
    pub admin_hosts: Vec<String>,
    /// Browser origins allowed to write through the Admin API (`https://manager.example.com`),
    /// comma-separated. Writes from any other origin are refused (cross-site requests).
    #[arg(long, env = "TOLLGATE_ADMIN_ORIGINS", value_delimiter = ',')]
    pub admin_origins: Vec<String>,
    /// Keep request headers with `_` in their names (dropped by default, as nginx does:
    /// `X_Consumer_Username` could pass for the gateway's `X-Consumer-Username`).
    #[arg(long, env = "TOLLGATE_UNDERSCORES_IN_HEADERS")]
    pub underscores_in_headers: bool,
    /// Proxies whose forwarding headers are believed, comma-separated IPs or CIDR networks
    /// (Kong's `trusted_ips`). Empty: the client is always the peer.
    #[arg(long, env = "TOLLGATE_TRUSTED_IPS", value_delimiter = ',')]
    pub trusted_ips: Vec<String>,
    /// The header a trusted proxy puts the client's address in (Kong's `real_ip_header`).
    #[arg(long, default_value = "X-Real-IP", env = "TOLLGATE_REAL_IP_HEADER")]
    pub real_ip_header: String,
    /// In a list of addresses (`X-Forwarded-For`), take the last one that is not a trusted
    /// proxy rather than the last one (Kong's `real_ip_recursive`).
    #[arg(long, env = "TOLLGATE_REAL_IP_RECURSIVE")]
    pub real_ip_recursive: bool,
    /// Longest life of a proxied WebSocket connection, in seconds, however busy (an idle one
    /// closes after its service's `read_timeout`).
    #[arg(long, default_value_t = 86_400, env = "TOLLGATE_WEBSOCKET_MAX_LIFETIME", value_parser = clap::value_parser!(u64).range(1..))]
    pub websocket_max_lifetime: u64,
    /// Raft listener between nodes.
    #[arg(
        long,
        default_value = "127.0.0.1:7000",
        env = "TOLLGATE_CLUSTER_LISTEN"
    )]
    pub cluster_listen: SocketAddr,
    /// Gossip (discovery, shared rate-limit counters) listener.
    #[arg(long, default_value = "127.0.0.1:7946", env = "TOLLGATE_GOSSIP_LISTEN")]
    pub gossip_listen: SocketAddr,
    /// Host name or IP other nodes use to reach this one (needed when listening on 0.0.0.0,
    /// e.g. in containers: the service name). Defaults to each listener's own IP.
    #[arg(long, env = "TOLLGATE_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// File of cluster secrets, one per line, the first used to send (`tollgate cluster secret`
    /// makes one). Seals gossip and authenticates cluster RPCs with TLS. Required, or the
    /// --cluster-tls-* files, unless the cluster and gossip listeners are on loopback.
    #[arg(long, env = "TOLLGATE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// This node's cluster certificate (PEM), signed by --cluster-tls-ca: PKI mode.
    #[arg(long, env = "TOLLGATE_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// The private key of --cluster-tls-cert (PEM).
    #[arg(long, env = "TOLLGATE_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// The cluster CA certificate(s) (PEM) that peers' certificates must chain to.
    #[arg(long, env = "TOLLGATE_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// The name cluster certificates carry and clients check.
    #[arg(
        long,
        default_value = "tollgate-cluster",
        env = "TOLLGATE_CLUSTER_TLS_SERVER_NAME"
    )]
    pub cluster_tls_server_name: String,
    /// Gossip addresses of existing nodes, comma-separated (host:port).
    #[arg(long, default_value = "", env = "TOLLGATE_SEEDS")]
    pub seeds: String,
    /// Number of nodes to wait for before forming a new cluster.
    #[arg(long, env = "TOLLGATE_BOOTSTRAP_EXPECT", value_parser = clap::value_parser!(u64).range(1..))]
    pub bootstrap_expect: Option<u64>,
    /// Most cluster rate-limit counters held (own and heard from peers, each); beyond it the
    /// least-used are dropped.
    #[arg(long, default_value_t = 100_000, env = "TOLLGATE_RATELIMIT_MAX_KEYS")]
    pub ratelimit_max_keys: usize,
    /// How often changed cluster rate-limit counts are published to gossip, in ms.
    #[arg(long, default_value_t = 100, env = "TOLLGATE_RATELIMIT_SYNC_MS", value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub ratelimit_sync_ms: u64,
    /// A declarative configuration file (Kong's format, YAML or JSON) loaded at start.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// A listener address, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

fn listen_or_off(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|e| format!("expected host:port or off: {e}"))
}

#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TOLLGATE_ECHO_LISTEN")]
    pub listen: SocketAddr,
    /// Name reported in every answer.
    #[arg(long, default_value = "echo", env = "TOLLGATE_ECHO_NAME")]
    pub name: String,
    /// Delay of every answer while slow mode is on (SIGUSR1 turns it on and off).
    #[arg(long, default_value_t = 300, env = "TOLLGATE_ECHO_SLOW_MS")]
    pub slow_ms: u64,
}

/// Sets up `tracing` output in the chosen format.
pub fn init_logging(format: &LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level '{level}': {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_must_be_positive() {
        assert!(Cli::try_parse_from(["tollgate", "--worker-threads", "0", "node"]).is_err());
        let cli = Cli::try_parse_from(["tollgate", "--worker-threads", "1", "node"]).unwrap();
        assert_eq!(cli.worker_threads, Some(1));
    }
}
