//! From targets to addresses. An IP target is its own address; a name is resolved through
//! hickory-resolver (the system's `/etc/resolv.conf` and hosts file), each address getting
//! the target's full weight, as Kong does. Answers are kept for their TTL (at least
//! [`MIN_TTL`]: Kong's TTL 0 would mean a lookup per request) and re-resolved by one task per
//! balancer that has names, which ends when the balancer is dropped. A failed first lookup
//! leaves the target with no address (`DNS_ERROR` in `/health`); a failed re-resolution
//! keeps the last good addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{config::ResolverConfig, TokioResolver};
use uuid::Uuid;

use super::{Balancer, Resolved};

/// Shortest time an answer is kept.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest time between two lookups of a name, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(60);
/// How soon a failed lookup is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Discovery {
    resolver: OnceLock<TokioResolver>,
    watched: Mutex<HashMap<Uuid, Weak<Balancer>>>,
}

impl Discovery {
    fn resolver(&self) -> &TokioResolver {
        self.resolver
            .get_or_init(|| match TokioResolver::builder_tokio() {
                Ok(b) => b.build(),
                // No usable resolv.conf: the hosts file still answers.
                Err(_) => TokioResolver::builder_with_config(
                    ResolverConfig::default(),
                    TokioConnectionProvider::default(),
                )
                .build(),
            })
    }

    /// Resolves a name to its addresses and how long they hold.
    pub async fn lookup(&self, name: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        match self.resolver().lookup_ip(name).await {
            Ok(l) => {
                let ips: Vec<IpAddr> = l.iter().collect();
                if ips.is_empty() {
                    return Err(format!("dns server error: no addresses for {name}"));
                }
                let ttl = l
                    .valid_until()
                    .saturating_duration_since(Instant::now())
                    .clamp(MIN_TTL, MAX_TTL);
                Ok((ips, ttl))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Makes sure a task resolves `b`'s names, and wakes it to look at changed targets.
    pub fn watch(self: &Arc<Self>, b: &Arc<Balancer>) {
        let has_names = b
            .targets()
            .iter()
            .any(|t| t.host.parse::<IpAddr>().is_err());
        if !has_names {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.retain(|_, w| w.strong_count() > 0);
        // The task of this very balancer (not of an earlier one with the same id, removed
        // and made again, whose task has not noticed yet).
        if watched
            .get(&b.id)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(b)))
        {
            b.wake.notify_one();
            return;
        }
        watched.insert(b.id, Arc::downgrade(b));
        let me = self.clone();
        let (weak, wake) = (Arc::downgrade(b), b.wake.clone());
        rt.spawn(async move { me.run(weak, wake).await });
    }

    /// Resolves the balancer's names until it is dropped; between rounds it holds only a
    /// weak reference, so a removed upstream's balancer goes at once.
    async fn run(self: Arc<Self>, weak: Weak<Balancer>, wake: Arc<tokio::sync::Notify>) {
        let mut due: HashMap<(Uuid, String), Instant> = HashMap::new();
        loop {
            let Some(b) = weak.upgrade() else { return };
            let now = Instant::now();
            let mut next = now + MAX_TTL;
            for t in b.targets() {
                if t.host.parse::<IpAddr>().is_ok() {
                    continue;
                }
                let key = (t.target.id, t.host.clone());
                let when = due.get(&key).copied();
                if t.resolved == Resolved::Pending || when.is_none_or(|w| w <= now) {
                    let (resolved, wait) = match self.lookup(&t.host).await {
                        Ok((ips, ttl)) => (Resolved::Addresses(ips), ttl),
                        Err(e) => (Resolved::Failed(e), RETRY),
                    };
                    b.resolve_result(t.target.id, resolved);
                    due.insert(key.clone(), Instant::now() + wait);
                }
                next = next.min(due[&key]);
            }
            let sleep = next.saturating_duration_since(Instant::now());
            drop(b);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = wake.notified() => {}
            }
        }
    }
}
