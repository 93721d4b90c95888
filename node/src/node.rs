//! `tollgate node`: wires storage, the replicator, the data-plane snapshot, the proxy and the
//! Admin API together, and shuts them down in order on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_cluster::auth::{self as cluster_auth, ClusterAuth, Plane};
use tollgate_cluster::discovery::{self, Discovery};
use tollgate_cluster::{parse_seeds, ClusterNode, NodeAddrs};
use tollgate_config::{declarative, Command};

use crate::admin::{self, AdminCtx};
use crate::cli::NodeArgs;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::ratelimit::GCounters;
use crate::serve::{serve, Peer, Shutdown, Tls};
use crate::snapshot::{Deps, Snapshot, SnapshotHandle};

/// A receiver that flips to `true` on SIGTERM or SIGINT.
pub fn shutdown_signal() -> Shutdown {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// Refuses flag combinations this build cannot honour, rather than ignoring them.
fn validate(args: &NodeArgs) -> anyhow::Result<Vec<String>> {
    let seeds = parse_seeds(&args.seeds).context("invalid --seeds")?;
    if args.bootstrap_expect.is_some_and(|k| k > 1) && seeds.is_empty() {
        bail!(
            "--bootstrap-expect above 1 needs --seeds: the nodes must be able to find each other"
        );
    }
    let admin_open = std::iter::once(args.admin_listen)
        .chain(args.admin_listen_tls.0)
        .any(|a| !a.ip().is_loopback());
    if admin_open && args.admin_token.as_deref().unwrap_or("").is_empty() {
        bail!(
            "--admin-listen {} or --admin-listen-tls is not a loopback address: set --admin-token \
             (TOLLGATE_ADMIN_TOKEN) so the Admin API is not open to the network",
            args.admin_listen
        );
    }
    let mut addrs = vec![
        ("--proxy-listen", args.proxy_listen),
        ("--admin-listen", args.admin_listen),
        ("--cluster-listen", args.cluster_listen),
        ("--gossip-listen", args.gossip_listen),
    ];
    addrs.extend(args.proxy_listen_tls.0.map(|a| ("--proxy-listen-tls", a)));
    addrs.extend(args.admin_listen_tls.0.map(|a| ("--admin-listen-tls", a)));
    for (i, (na, a)) in addrs.iter().enumerate() {
        for (nb, b) in &addrs[i + 1..] {
            if a.port() != 0 && a == b {
                bail!("{na} and {nb} are both {a}");
            }
        }
    }
    Ok(seeds)
}

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The cluster plane's credentials, or none where that is allowed: a cluster or gossip
/// listener reachable from other hosts without them would let anyone join and rewrite the
/// configuration.
fn cluster_credentials(args: &NodeArgs) -> anyhow::Result<ClusterAuth> {
    let auth = ClusterAuth::from_flags(&cluster_auth::Flags {
        secret_file: args.cluster_secret_file.clone(),
        tls_cert: args.cluster_tls_cert.clone(),
        tls_key: args.cluster_tls_key.clone(),
        tls_ca: args.cluster_tls_ca.clone(),
        server_name: args.cluster_tls_server_name.clone(),
    })?;
    let exposed: Vec<String> = [
        ("--cluster-listen", args.cluster_listen),
        ("--gossip-listen", args.gossip_listen),
    ]
    .iter()
    .filter(|(_, a)| !a.ip().is_loopback())
    .map(|(n, a)| format!("{n} {a}"))
    .collect();
    if !auth.is_enabled() {
        if !exposed.is_empty() {
            bail!(
                "{} is not a loopback address: give the cluster credentials \
                 (--cluster-secret-file, made by `tollgate cluster secret`, or \
                 --cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca) so that only cluster \
                 members can join, gossip and replicate",
                exposed.join(" and ")
            );
        }
        tracing::warn!(
            "the cluster plane has no credentials (loopback only): any local process can join; \
             set --cluster-secret-file to close it"
        );
    }
    Ok(auth)
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let seeds = validate(&args)?;
    let auth = cluster_credentials(&args)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;

    let metrics = Arc::new(Metrics::new());
    let counters = Arc::new(crate::ratelimit::local_counters(args.ratelimit_max_keys));
    let snapshots = Arc::new(SnapshotHandle::new(Snapshot::empty()));
    let cluster_counters = Arc::new(GCounters::new(args.id, args.ratelimit_max_keys));
    let balancers = Arc::new(crate::balancer::Balancers::default());
    let health_view = crate::balancer::cluster::ClusterHealth::new(args.id);
    let deps = Deps {
        counters: counters.clone(),
        cluster_counters: cluster_counters.clone(),
        metrics: metrics.clone(),
        balancers: balancers.clone(),
    };

    // Idle upstream connections past their idle timeout are closed, a few seconds late at most.
    let reaper_snapshots = snapshots.clone();
    let reaper_balancers = balancers.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::proxy::upstream::IDLE_TIMEOUT / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            reaper_snapshots.load().evict_idle_connections();
            for b in reaper_balancers.all() {
                for p in b.set.load().peers.iter() {
                    p.state.pool.evict_expired();
                }
            }
        }
    });

    // After every applied change: build the data plane's snapshot and swap it in.
    let hook_snapshots = snapshots.clone();
    let hook_metrics = metrics.clone();
    let hook = Box::new(move |state: &tollgate_config::State, index: u64| {
        let started = Instant::now();
        let prev = hook_snapshots.load_full();
        hook_snapshots.store(Snapshot::build(state, &prev, &deps, index));
        hook_metrics.config_applied_index.set(index as i64);
        hook_metrics.config_rebuilds.inc();
        hook_metrics
            .config_rebuild_seconds
            .observe(started.elapsed().as_secs_f64());
        hook_metrics.config_entities.set(state.len() as i64);
    });

    let shutdown = shutdown_signal();
    let proxy_listener = bind("proxy", args.proxy_listen).await?;
    let admin_listener = bind("admin", args.admin_listen).await?;
    let cluster_listener = bind("cluster", args.cluster_listen).await?;
    let proxy_tls_listener = match args.proxy_listen_tls.0 {
        Some(a) => Some(bind("proxy TLS", a).await?),
        None => None,
    };
    let admin_tls_listener = match args.admin_listen_tls.0 {
        Some(a) => Some(bind("admin TLS", a).await?),
        None => None,
    };
    // The certificate for clients whose SNI names no configured one (and the Admin API's).
    let default_pair = Arc::new(
        crate::tls::server::default_pair(
            &args.data_dir,
            args.ssl_cert.as_deref().zip(args.ssl_cert_key.as_deref()),
        )
        .context("cannot load the default TLS certificate")?,
    );
    let resolver = Arc::new(crate::tls::server::SniResolver {
        snapshots: snapshots.clone(),
        default: default_pair,
    });
    crate::tls::verify::warm_up();
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let store_dir = args.data_dir.join("raft");
    let cluster_addr = cluster_listener.local_addr()?;
    let addrs = advertised(&args, cluster_addr, admin_addr, proxy_addr).await?;
    let cluster = ClusterNode::start(addrs, &store_dir, hook, auth.rpc.as_deref())
        .await
        .with_context(|| format!("cannot start Raft on {}", store_dir.display()))?;
    // Purges through any node's Admin API reach this node's proxy-cache store.
    cluster.on_notice(Box::new(crate::plugins::proxy_cache::on_notice));
    let rpc_node = cluster.clone();
    // The cluster listener outlives the proxy and Admin API drains: an Admin API request in
    // flight at SIGTERM (a forwarded write waiting for its local apply, a consistent read)
    // still needs the leader's appends to arrive here.
    let (cluster_stop, cluster_shutdown) = watch::channel(false);
    let cluster_tls = auth.rpc.as_ref().map(|t| {
        let rejections = auth.rejections.clone();
        Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(t.server.clone()),
            on_failure: Arc::new(move |peer, reason: &str| {
                rejections.record(peer, Plane::Cluster, reason)
            }),
            max_per_ip: crate::serve::MAX_HANDSHAKES_PER_IP,
        }
    });
    let cluster_task = tokio::spawn(serve(
        cluster_listener,
        move |req, _peer| tollgate_cluster::rpc::handle(rpc_node.clone(), req),
        cluster_shutdown,
        "cluster",
        None,
        cluster_tls,
    ));
    let disc = Arc::new(
        Discovery::start(&cluster, seeds.clone(), &auth)
            .await
            .with_context(|| format!("cannot start gossip on {}", args.gossip_listen))?,
    );
    tokio::spawn(discovery::run(
        cluster.clone(),
        disc.clone(),
        args.bootstrap_expect,
        !seeds.is_empty(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::metrics::watch_raft(
        cluster.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    disc.feed_counters(cluster_counters.clone()).await;
    // Target health: the cluster's shared view, and active probes by each address's owner.
    let heard = health_view.clone();
    disc.subscribe(
        crate::balancer::cluster::PREFIX,
        move |node, generation, key, value| heard.hear(node, generation, key, value),
    )
    .await;
    tokio::spawn(crate::balancer::cluster::run(
        health_view.clone(),
        balancers.clone(),
        disc.clone(),
        shutdown.clone(),
    ));
    let owner_view = health_view.clone();
    tokio::spawn(crate::balancer::active::run(
        balancers.clone(),
        Arc::new(move |upstream, addr| owner_view.owns(upstream, addr)),
    ));
    tokio::spawn(publish_counters(
        cluster_counters.clone(),
        disc.clone(),
        metrics.clone(),
        Duration::from_millis(args.ratelimit_sync_ms),
        shutdown.clone(),
    ));

    if let Some(path) = &args.config {
        load_declarative(&cluster, path).await?;
    }

    let spill_dir = args.data_dir.join("request-bodies");
    std::fs::create_dir_all(&spill_dir)
        .with_context(|| format!("cannot create {}", spill_dir.display()))?;
    let policy = crate::proxy::ClientPolicy {
        underscores_in_headers: args.underscores_in_headers,
        trusted: crate::proxy::trusted::TrustedIps::new(&args.trusted_ips, &args.real_ip_header)?
            .recursive(args.real_ip_recursive),
        spill_dir,
        websocket_max_lifetime: Duration::from_secs(args.websocket_max_lifetime),
        shutdown: Some(shutdown.clone()),
    };
    let proxy = Arc::new(Proxy::new(
        snapshots.clone(),
        metrics.clone(),
        proxy_addr,
        policy,
    ));
    let tls_for = |listener: &'static str| {
        let failures = metrics
            .tls_handshake_failures
            .with_label_values(&[listener]);
        Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(crate::tls::server::server_config(
                resolver.clone(),
                true,
            )),
            on_failure: Arc::new(move |peer, reason: &str| {
                failures.inc();
                tracing::debug!(%peer, reason, listener, "TLS handshake failed");
            }),
            max_per_ip: crate::serve::MAX_HANDSHAKES,
        }
    };
    let proxy_tls_task = proxy_tls_listener.map(|l| {
        let proxy = proxy.clone();
        tokio::spawn(serve(
            l,
            move |req, peer: &Peer| proxy.clone().handle(req, peer.clone()),
            shutdown.clone(),
            "proxy-tls",
            Some(metrics.connections_accepted.clone()),
            Some(tls_for("proxy")),
        ))
    });
    let proxy_task = tokio::spawn(serve(
        proxy_listener,
        move |req, peer: &Peer| proxy.clone().handle(req, peer.clone()),
        shutdown.clone(),
        "proxy",
        Some(metrics.connections_accepted.clone()),
        None,
    ));

    let admin_ctx = Arc::new(AdminCtx {
        node_id: args.id,
        node_uuid: {
            let id = node_uuid(&args.data_dir)?;
            let _ = crate::plugins::NODE_ID.set(id);
            id
        },
        cluster_auth: (auth.mode, auth.rejections.clone()),
        replicator: cluster.clone(),
        discovery: disc.clone(),
        metrics: metrics.clone(),
        snapshots: snapshots.clone(),
        balancers: balancers.clone(),
        health_view: health_view.clone(),
        guard: admin::guard::Guard::new(
            args.admin_token.as_deref(),
            &args
                .admin_hosts
                .iter()
                .chain(args.advertise_addr.iter())
                .cloned()
                .collect::<Vec<_>>(),
            &args.admin_origins,
        )
        .with_manager_origins(admin_addr.ip().is_loopback()),
        cors: admin::cors::Cors::new(&args.admin_origins, admin_addr.ip().is_loopback()),
        proxy_listen: proxy_addr.to_string(),
        admin_listen: admin_addr.to_string(),
    });
    let app = admin::router(admin_ctx);
    let admin_handler = move |mut req: http::Request<hyper::body::Incoming>, _peer: &Peer| {
        let mut app = app.clone();
        // HTTP/2 names the host in `:authority`; the guard checks `Host`.
        if req.version() == http::Version::HTTP_2 && !req.headers().contains_key(http::header::HOST)
        {
            if let Some(v) = req
                .uri()
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
        async move {
            use tower_service::Service;
            match app.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    };
    let admin_tls_task = admin_tls_listener.map(|l| {
        tokio::spawn(serve(
            l,
            admin_handler.clone(),
            shutdown.clone(),
            "admin-tls",
            None,
            Some(tls_for("admin")),
        ))
    });
    let admin_task = tokio::spawn(serve(
        admin_listener,
        admin_handler,
        shutdown.clone(),
        "admin",
        None,
        None,
    ));

    // Rate-limit counters of past windows are dropped in the background.
    let gc_counters = counters.clone();
    let gc_metrics = metrics.clone();
    let mut gc_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    gc_counters.gc(unix_now());
                    gc_metrics.ratelimit_tracked_keys.set(gc_counters.tracked().0 as i64);
                }
                _ = gc_shutdown.changed() => break,
            }
        }
    });

    tracing::info!(
        node_id = args.id,
        proxy = %proxy_addr,
        proxy_tls = ?args.proxy_listen_tls.0,
        admin = %admin_addr,
        admin_tls = ?args.admin_listen_tls.0,
        cluster = %args.cluster_listen,
        gossip = %args.gossip_listen,
        cluster_auth = auth.mode,
        data_dir = %args.data_dir.display(),
        "tollgate node ready"
    );

    let _ = tokio::join!(proxy_task, admin_task);
    for t in [proxy_tls_task, admin_tls_task].into_iter().flatten() {
        let _ = t.await;
    }
    let _ = cluster_stop.send(true);
    cluster.shutdown().await;
    let _ = cluster_task.await;
    if let Ok(d) = Arc::try_unwrap(disc) {
        d.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The addresses this node announces: `--advertise-addr` with each listener's port, or each
/// listener's own address. An unspecified IP (0.0.0.0) cannot be announced.
async fn advertised(
    args: &NodeArgs,
    cluster: SocketAddr,
    admin: SocketAddr,
    proxy: SocketAddr,
) -> anyhow::Result<NodeAddrs> {
    let host_of = |a: SocketAddr| match &args.advertise_addr {
        Some(h) => h.clone(),
        None => a.ip().to_string(),
    };
    if args.advertise_addr.is_none()
        && (cluster.ip().is_unspecified() || args.gossip_listen.ip().is_unspecified())
    {
        bail!(
            "--cluster-listen/--gossip-listen on an unspecified address ({cluster}, {}) need --advertise-addr: \
             the name or IP other nodes reach this one at",
            args.gossip_listen
        );
    }
    let gossip = match &args.advertise_addr {
        None => args.gossip_listen,
        Some(h) => {
            let port = args.gossip_listen.port();
            tokio::net::lookup_host((h.as_str(), port))
                .await
                .with_context(|| format!("cannot resolve --advertise-addr {h}"))?
                .find(|a| a.is_ipv4())
                .with_context(|| format!("--advertise-addr {h} has no IPv4 address"))?
        }
    };
    let fmt = |a: SocketAddr| {
        let h = host_of(a);
        if h.contains(':') {
            format!("[{h}]:{}", a.port())
        } else {
            format!("{h}:{}", a.port())
        }
    };
    Ok(NodeAddrs {
        id: args.id,
        cluster: fmt(cluster),
        gossip_listen: args.gossip_listen,
        gossip,
        admin: fmt(admin),
        proxy: fmt(proxy),
    })
}

/// Publishes this node's changed cluster rate-limit counts every `every`, keeps the live-node
/// count current, and collects expired or excess counters.
async fn publish_counters(
    store: Arc<GCounters>,
    disc: Arc<Discovery>,
    metrics: Arc<Metrics>,
    every: Duration,
    mut stop: Shutdown,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = unix_now();
        let started = Instant::now();
        let kvs = store.take_publication(now);
        if !kvs.is_empty() {
            metrics.ratelimit_published.inc_by(kvs.len() as u64);
            disc.publish_many(kvs).await;
            metrics
                .ratelimit_publish_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        rounds += 1;
        if rounds.is_multiple_of(10) {
            let live = disc.peers().await.values().filter(|p| p.live).count() as u64;
            store.set_live_nodes(live.max(1));
            store.gc(now);
            let (own, remote) = store.tracked();
            metrics.ratelimit_cluster_keys.set((own + remote) as i64);
            metrics.ratelimit_evicted.set(store.evicted() as i64);
            let (mine, all) = store.totals(now);
            metrics.ratelimit_peer_fraction.set(if all == 0 {
                0.0
            } else {
                1.0 - mine as f64 / all as f64
            });
        }
    }
}

/// Loads a declarative file into an empty cluster (first start). Afterwards the Admin API owns
/// the configuration, so restarts with the same flag do not undo changes made since.
async fn load_declarative(cluster: &ClusterNode, path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    struct Fresh;
    impl declarative::Stamps for Fresh {
        fn id(&mut self) -> uuid::Uuid {
            uuid::Uuid::new_v4()
        }
        fn key(&mut self) -> String {
            use rand::distr::{Alphanumeric, SampleString};
            Alphanumeric.sample_string(&mut rand::rng(), 32)
        }
        fn now(&self) -> i64 {
            unix_now() as i64
        }
    }
    let data =
        declarative::parse(&text, &mut Fresh).with_context(|| format!("in {}", path.display()))?;
    // Wait for the cluster to be able to take writes (single node: its own election).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !cluster.read(|st| st.is_empty()).await {
            tracing::info!(file = %path.display(), "configuration already present; declarative file not loaded");
            return Ok(());
        }
        match cluster
            .propose(Command::Replace(Box::new(data.clone())))
            .await
        {
            Ok(_) => {
                tracing::info!(file = %path.display(), "declarative configuration loaded");
                return Ok(());
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "cluster not ready for the declarative load; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("cannot load {}: {e}", path.display()),
        }
    }
}

/// The node's UUID (Kong's `node_id`): read from `DATA_DIR/node_id`, or made and written there
/// on the first start, so it survives restarts.
fn node_uuid(dir: &std::path::Path) -> anyhow::Result<uuid::Uuid> {
    let path = dir.join("node_id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(id) = uuid::Uuid::parse_str(text.trim()) {
            return Ok(id);
        }
    }
    let id = uuid::Uuid::new_v4();
    let tmp = dir.join("node_id.tmp");
    std::fs::write(&tmp, id.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}
