//! DNS clusters (a Backend whose hosts include a DNS name, Envoy's `envoy.clusters.dns` with
//! kgateway's V4_PREFERRED): every host is resolved (an IP literal is its own answer), and the
//! addresses found, each with the port and the host's name, are the cluster's endpoints. Each
//! host is resolved again `refresh_rate` (Envoy's 5s by default) plus a random 0..`jitter`
//! after its last answer, as Envoy's resolve targets do.
//!
//! A failed lookup keeps the host's last addresses (Envoy keeps its hosts), is logged and
//! counted (`cluster.<name>.update_failure`), and is tried again after `refresh_rate` (Envoy's
//! failure backoff without `dns_failure_refresh_rate`). An answer equal to the last one changes
//! nothing (`update_no_rebuild`); a new one replaces the endpoint set through
//! `ClusterRuntime::replace_endpoints`, the path a new Snapshot's endpoints take.
//!
//! The resolver is the system's (getaddrinfo, through tokio's `lookup_host` on its blocking
//! pool): it reads /etc/hosts and nsswitch and resolv.conf at every lookup, as the process's
//! other lookups do. getaddrinfo gives no TTL: with `respect_ttl`, the name servers of
//! resolv.conf are also asked for the name's records, directly, for the answer's TTL (`ttl`,
//! on the wire format of `wire`), and the host is resolved again when it runs out (at least
//! 1 s apart); a name without a TTL (from /etc/hosts, or no server answering in time) is
//! resolved again at the refresh rate. Envoy's resolver statistics (`dns.cares.*`) belong to
//! its c-ares resolver and have no counterpart here.
//!
//! One background task per DNS cluster, on the data plane's runtime, with a sub-task per host;
//! it starts with the cluster, keeps running (and keeps its endpoints) while a new Snapshot
//! brings the same hosts and settings, restarts when they change, and stops when the cluster
//! leaves the Snapshot or stops being a DNS cluster.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use snapshot::{BackendHost, Discovery, DnsSettings};
use tokio::task::{AbortHandle, JoinSet};

use crate::cluster::{ClusterRuntime, NewEndpoint};
use crate::stats::{self, MetricKind};

mod ttl;
mod wire;

/// A TTL below this is not followed (a zero or one-second TTL would make a lookup loop).
const MIN_TTL_REFRESH: Duration = Duration::from_secs(1);

/// One lookup's answer: every address of the name, and the TTL when the resolver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub addresses: Vec<IpAddr>,
    pub ttl: Option<Duration>,
}

/// A name resolver (the system's in production, a scripted one in tests).
pub(crate) trait Resolve: Send + Sync + 'static {
    /// The name's addresses, and with `with_ttl` its TTL when one is known.
    fn lookup(&self, name: &str, with_ttl: bool) -> impl Future<Output = std::io::Result<Answer>> + Send;
}

/// getaddrinfo, as every other lookup of the process, and the name servers' TTL when asked
/// (see the module comment).
pub(crate) struct SystemResolver;

impl Resolve for SystemResolver {
    async fn lookup(&self, name: &str, with_ttl: bool) -> std::io::Result<Answer> {
        // Both at once: the TTL query is bounded (2 s) and holds the addresses no longer.
        let (addresses, ttl) = tokio::join!(tokio::net::lookup_host((name, 0)), async {
            if with_ttl { ttl::ttl_of(name).await } else { None }
        });
        let addresses = addresses?.map(|a| a.ip()).collect();
        Ok(Answer { addresses, ttl })
    }
}

/// Envoy's counters of a cluster's endpoint updates, for a DNS cluster's lookups.
#[derive(Debug, Default)]
struct DnsStats {
    update_attempt: AtomicU64,
    update_success: AtomicU64,
    update_failure: AtomicU64,
    update_no_rebuild: AtomicU64,
}

/// A cluster's resolver: what it resolves, each host's last addresses, the task.
#[derive(Default)]
pub(crate) struct ClusterDns {
    state: Mutex<Option<Resolving>>,
    stats: DnsStats,
}

struct Resolving {
    hosts: Vec<BackendHost>,
    settings: DnsSettings,
    /// Changes with every restart: a result of an older task is dropped.
    generation: u64,
    /// Index for index with `hosts`: the last good addresses (None before the first answer).
    resolved: Vec<Option<Vec<SocketAddr>>>,
    task: AbortHandle,
}

impl Drop for Resolving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ClusterDns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Resolving>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the cluster's discovery and DNS settings from a new Snapshot with the system
    /// resolver (see `configure_with`).
    pub(crate) fn configure(
        cluster: &Arc<ClusterRuntime>,
        discovery: &Discovery,
        settings: Option<&DnsSettings>,
    ) {
        Self::configure_with(cluster, discovery, settings, Arc::new(SystemResolver));
    }

    /// A DNS cluster with the same hosts and settings as before keeps its task and endpoints
    /// (no lookup storm on every Snapshot); other hosts or settings restart it (the hosts that
    /// stay keep their addresses until their first new answer); any other discovery stops it.
    pub(crate) fn configure_with<R: Resolve>(
        cluster: &Arc<ClusterRuntime>,
        discovery: &Discovery,
        settings: Option<&DnsSettings>,
        resolver: Arc<R>,
    ) {
        let this = &cluster.dns;
        let mut state = this.lock();
        let Discovery::Dns { hosts } = discovery else {
            state.take();
            return;
        };
        let settings = settings.cloned().unwrap_or_default();
        if let Some(current) = state.as_ref()
            && current.hosts == *hosts
            && current.settings == settings
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                cluster = cluster.name(),
                "no runtime to resolve the cluster's hosts on"
            );
            return;
        };
        let previous = state.take();
        let generation = previous.as_ref().map_or(0, |p| p.generation) + 1;
        let resolved: Vec<Option<Vec<SocketAddr>>> = hosts
            .iter()
            .map(|h| {
                let p = previous.as_ref()?;
                let at = p.hosts.iter().position(|old| old == h)?;
                p.resolved[at].clone()
            })
            .collect();
        // A host that left takes its addresses with it now, not at the next answer that
        // changes (an unchanged answer rebuilds nothing).
        if previous.is_some() {
            cluster.replace_endpoints(endpoints_of(hosts, &resolved));
        }
        let task = runtime.spawn(resolve_all(
            Arc::downgrade(cluster),
            hosts.clone(),
            settings.clone(),
            generation,
            resolver,
        ));
        *state = Some(Resolving {
            hosts: hosts.clone(),
            settings,
            generation,
            resolved,
            task: task.abort_handle(),
        });
    }

    /// The cluster left the Snapshot: its resolver stops, and no late answer lands after this.
    pub(crate) fn stop(&self) {
        self.lock().take();
    }

    /// Takes a host's new addresses: with the lock held, the cluster's endpoints become every
    /// host's last addresses (so a `stop` or restart in between drops it). False when the task
    /// of `generation` is no longer current.
    fn record(
        &self,
        cluster: &Arc<ClusterRuntime>,
        generation: u64,
        index: usize,
        addresses: Vec<SocketAddr>,
    ) -> bool {
        let mut state = self.lock();
        let Some(current) = state.as_mut().filter(|s| s.generation == generation) else {
            return false;
        };
        if current.resolved[index].as_ref() == Some(&addresses) {
            stats::inc(&self.stats.update_no_rebuild);
            return true;
        }
        current.resolved[index] = Some(addresses);
        cluster.replace_endpoints(endpoints_of(&current.hosts, &current.resolved));
        true
    }

    /// `cluster.<name>.update_*` (name under the cluster, Prometheus family, kind, value), while
    /// the cluster resolves names.
    pub(crate) fn list(&self) -> Vec<(&'static str, &'static str, MetricKind, u64)> {
        if self.lock().is_none() {
            return Vec::new();
        }
        let s = &self.stats;
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "update_attempt",
                "update_attempt",
                MetricKind::Counter,
                v(&s.update_attempt),
            ),
            (
                "update_failure",
                "update_failure",
                MetricKind::Counter,
                v(&s.update_failure),
            ),
            (
                "update_no_rebuild",
                "update_no_rebuild",
                MetricKind::Counter,
                v(&s.update_no_rebuild),
            ),
            (
                "update_success",
                "update_success",
                MetricKind::Counter,
                v(&s.update_success),
            ),
        ]
    }
}

/// The cluster's endpoints: every host's last addresses, with the host's name.
fn endpoints_of(hosts: &[BackendHost], resolved: &[Option<Vec<SocketAddr>>]) -> Vec<NewEndpoint> {
    let mut endpoints: Vec<NewEndpoint> = Vec::new();
    for (host, resolved) in hosts.iter().zip(resolved) {
        for address in resolved.iter().flatten() {
            // Two names giving one address make one endpoint (the first name's).
            if !endpoints.iter().any(|e| e.address == *address) {
                endpoints.push(NewEndpoint {
                    address: *address,
                    zone: None,
                    hostname: Some(host.host.clone()),
                });
            }
        }
    }
    endpoints
}

/// Every host of the cluster, each on its own schedule, until aborted (dropping the set aborts
/// each host's task) or the cluster is gone.
async fn resolve_all<R: Resolve>(
    cluster: Weak<ClusterRuntime>,
    hosts: Vec<BackendHost>,
    settings: DnsSettings,
    generation: u64,
    resolver: Arc<R>,
) {
    let mut each = JoinSet::new();
    for (index, host) in hosts.into_iter().enumerate() {
        each.spawn(resolve_host(
            cluster.clone(),
            host,
            index,
            settings.clone(),
            generation,
            resolver.clone(),
        ));
    }
    while each.join_next().await.is_some() {}
}

async fn resolve_host<R: Resolve>(
    cluster: Weak<ClusterRuntime>,
    host: BackendHost,
    index: usize,
    settings: DnsSettings,
    generation: u64,
    resolver: Arc<R>,
) {
    // An IP address is its own answer, once.
    if let Ok(ip) = host.host.parse::<IpAddr>() {
        let Some(cluster) = cluster.upgrade() else { return };
        stats::inc(&cluster.dns.stats.update_attempt);
        stats::inc(&cluster.dns.stats.update_success);
        cluster
            .dns
            .record(&cluster, generation, index, vec![SocketAddr::new(ip, host.port)]);
        return;
    }
    let mut failing = false;
    loop {
        match cluster.upgrade() {
            Some(cluster) => stats::inc(&cluster.dns.stats.update_attempt),
            None => return,
        }
        let answer = resolver.lookup(&host.host, settings.respect_ttl).await;
        let Some(cluster) = cluster.upgrade() else { return };
        let wait = match answer {
            Ok(answer) if !answer.addresses.is_empty() => {
                stats::inc(&cluster.dns.stats.update_success);
                if failing {
                    tracing::info!(cluster = cluster.name(), host = %host.host, "DNS lookup succeeds again");
                    failing = false;
                }
                let addresses = v4_preferred(&answer.addresses, host.port);
                if !cluster.dns.record(&cluster, generation, index, addresses) {
                    return;
                }
                let refresh = match answer.ttl {
                    Some(ttl) if settings.respect_ttl => ttl.max(MIN_TTL_REFRESH),
                    _ => settings.refresh_rate(),
                };
                refresh + random_jitter(settings.jitter)
            }
            failed => {
                stats::inc(&cluster.dns.stats.update_failure);
                let why = match failed {
                    Ok(_) => "no address".to_string(),
                    Err(e) => e.to_string(),
                };
                // Once per failing spell: a name that stays broken would log every refresh.
                if !failing {
                    tracing::warn!(
                        cluster = cluster.name(),
                        host = %host.host,
                        "DNS lookup failed ({why}); the host keeps its last addresses, tried again in {:?}",
                        settings.refresh_rate()
                    );
                    failing = true;
                }
                settings.refresh_rate()
            }
        };
        drop(cluster);
        tokio::time::sleep(wait).await;
    }
}

/// kgateway's V4_PREFERRED: the IPv4 addresses when there are any, else the IPv6 ones; sorted
/// and without repeats, so that the same answer in another order changes nothing.
fn v4_preferred(addresses: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    let any_v4 = addresses.iter().any(IpAddr::is_ipv4);
    let mut out: Vec<SocketAddr> = addresses
        .iter()
        .filter(|a| a.is_ipv4() == any_v4)
        .map(|a| SocketAddr::new(*a, port))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// 0..jitter at random (Envoy adds `random % dns_jitter` to each refresh).
fn random_jitter(jitter: Option<Duration>) -> Duration {
    match jitter {
        Some(j) if !j.is_zero() => {
            let millis = j.as_millis().min(u128::from(u64::MAX)) as u64;
            Duration::from_millis(crate::load_balancing::random_u64() % millis.max(1))
        }
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot::{Cluster, HealthCheck, HttpHealthCheck, UpstreamPolicy};
    use std::collections::{HashMap, VecDeque};
    use std::time::Instant;

    /// One scripted answer: the addresses, or the lookup's error.
    type ScriptedAnswer = Result<Vec<IpAddr>, String>;
    /// A name's answers as a test writes them.
    type Script<'a> = (&'a str, Vec<Result<Vec<&'a str>, &'a str>>);

    /// Answers each name from a script (the last answer repeats), counting lookups.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<HashMap<String, VecDeque<ScriptedAnswer>>>,
        lookups: AtomicU64,
        /// The TTL of every answer, when the lookup asks for one.
        ttl: Option<Duration>,
        /// Lookups that asked for a TTL.
        asked_ttl: AtomicU64,
    }

    impl Scripted {
        fn with(script: &[Script<'_>]) -> Arc<Scripted> {
            let this = Scripted::default();
            for (name, answers) in script {
                let answers = answers
                    .iter()
                    .map(|a| match a {
                        Ok(ips) => Ok(ips.iter().map(|i| i.parse().unwrap()).collect()),
                        Err(e) => Err(e.to_string()),
                    })
                    .collect();
                this.answers.lock().unwrap().insert(name.to_string(), answers);
            }
            Arc::new(this)
        }
        fn lookups(&self) -> u64 {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    impl Resolve for Scripted {
        async fn lookup(&self, name: &str, with_ttl: bool) -> std::io::Result<Answer> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if with_ttl {
                self.asked_ttl.fetch_add(1, Ordering::SeqCst);
            }
            let mut all = self.answers.lock().unwrap();
            let answers = all.get_mut(name).expect("a scripted name");
            let answer = if answers.len() > 1 {
                answers.pop_front()
            } else {
                answers.front().cloned()
            };
            match answer.expect("an answer") {
                Ok(addresses) => Ok(Answer {
                    addresses,
                    ttl: self.ttl.filter(|_| with_ttl),
                }),
                Err(e) => Err(std::io::Error::other(e)),
            }
        }
    }

    fn dns_cluster(hosts: &[(&str, u16)], refresh: Duration) -> (Cluster, Arc<ClusterRuntime>) {
        let cluster = Cluster {
            name: "backend_default_b_0".into(),
            discovery: Discovery::Dns {
                hosts: hosts
                    .iter()
                    .map(|(h, p)| BackendHost {
                        host: h.to_string(),
                        port: *p,
                    })
                    .collect(),
            },
            endpoints: Vec::new(),
            protocol: snapshot::UpstreamProtocol::Http1,
            upstream: UpstreamPolicy {
                dns: Some(DnsSettings {
                    refresh_rate: Some(refresh),
                    jitter: None,
                    respect_ttl: false,
                }),
                ..UpstreamPolicy::default()
            },
        };
        let runtime = Arc::new(ClusterRuntime::new(&cluster, true, None));
        (cluster, runtime)
    }

    fn start(cluster: &Cluster, runtime: &Arc<ClusterRuntime>, resolver: &Arc<Scripted>) {
        ClusterDns::configure_with(
            runtime,
            &cluster.discovery,
            cluster.upstream.dns.as_ref(),
            resolver.clone(),
        );
    }

    fn endpoints(runtime: &ClusterRuntime) -> Vec<(String, Option<String>)> {
        runtime
            .endpoints()
            .into_iter()
            .map(|e| (e.address.to_string(), e.hostname))
            .collect()
    }

    fn stat(runtime: &ClusterRuntime, name: &str) -> u64 {
        runtime
            .dns
            .list()
            .into_iter()
            .find(|s| s.0 == name)
            .map_or(0, |s| s.3)
    }

    /// Polls `done` (the resolver's task runs apart) until it holds, for at most 5 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn named(address: &str, name: &str) -> (String, Option<String>) {
        (address.to_string(), Some(name.to_string()))
    }

    #[tokio::test]
    async fn names_are_resolved_and_resolved_again_at_the_refresh_rate() {
        let resolver = Scripted::with(&[(
            "a.test",
            vec![
                Ok(vec!["127.0.0.2", "::1"]),
                Ok(vec!["127.0.0.2", "127.0.0.3"]),
                Ok(vec!["::1"]),
            ],
        )]);
        let (cluster, runtime) =
            dns_cluster(&[("a.test", 8080), ("127.0.0.9", 81)], Duration::from_millis(50));
        start(&cluster, &runtime, &resolver);
        // V4_PREFERRED: with an IPv4 address, the IPv6 one is left out; the IP host is its own answer.
        until("the first answer", || endpoints(&runtime).len() == 2).await;
        let mut first = endpoints(&runtime);
        first.sort();
        assert_eq!(
            first,
            [
                named("127.0.0.2:8080", "a.test"),
                named("127.0.0.9:81", "127.0.0.9")
            ]
        );
        let kept = runtime
            .endpoint_list()
            .iter()
            .find(|e| e.address.port() == 8080)
            .unwrap()
            .clone();
        until("the second answer", || endpoints(&runtime).len() == 3).await;
        // The address that stayed is the same endpoint (its pool, health and counters stay).
        assert!(runtime.endpoint_list().iter().any(|e| Arc::ptr_eq(e, &kept)));
        // Only IPv6 now: those are used.
        until("the third answer", || {
            endpoints(&runtime).iter().any(|e| e.0 == "[::1]:8080")
        })
        .await;
        assert!(kept.is_removed());
        assert_eq!(
            resolver.lookups(),
            stat(&runtime, "update_attempt") - 1,
            "the IP host is never looked up"
        );
        until("answers equal to the last", || {
            stat(&runtime, "update_no_rebuild") >= 2
        })
        .await;
        assert_eq!(stat(&runtime, "update_failure"), 0);
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_last_addresses_and_is_counted() {
        let resolver = Scripted::with(&[(
            "a.test",
            vec![Ok(vec!["127.0.0.2"]), Err("Temporary failure in name resolution")],
        )]);
        let (cluster, runtime) = dns_cluster(&[("a.test", 8080)], Duration::from_millis(20));
        start(&cluster, &runtime, &resolver);
        until("failures", || stat(&runtime, "update_failure") >= 3).await;
        assert_eq!(endpoints(&runtime), [named("127.0.0.2:8080", "a.test")]);
        assert_eq!(stat(&runtime, "update_success"), 1);
        assert!(!runtime.endpoint_list()[0].is_removed());
    }

    #[tokio::test]
    async fn the_resolver_stops_with_the_cluster() {
        let resolver = Scripted::with(&[("a.test", vec![Ok(vec!["127.0.0.2"])])]);
        let (cluster, runtime) = dns_cluster(&[("a.test", 8080)], Duration::from_millis(10));
        start(&cluster, &runtime, &resolver);
        until("lookups", || resolver.lookups() >= 3).await;
        runtime.retire();
        // The task held the resolver: aborted, it lets it go, and looks nothing up again.
        until("the task to end", || Arc::strong_count(&resolver) == 1).await;
        let after = resolver.lookups();
        assert!(endpoints(&runtime).is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(resolver.lookups(), after);
        assert!(
            runtime.dns.list().is_empty(),
            "no update_* counters without a resolver"
        );
    }

    #[tokio::test]
    async fn the_same_hosts_and_settings_keep_their_resolver_and_endpoints() {
        let resolver = Scripted::with(&[
            ("a.test", vec![Ok(vec!["127.0.0.2"])]),
            ("b.test", vec![Ok(vec!["127.0.0.3"])]),
        ]);
        let (cluster, runtime) = dns_cluster(&[("a.test", 8080)], Duration::from_secs(3600));
        start(&cluster, &runtime, &resolver);
        until("the first answer", || endpoints(&runtime).len() == 1).await;
        let endpoint = runtime.endpoint_list()[0].clone();
        // A new Snapshot with the cluster unchanged: no new lookup, the same endpoint.
        runtime.update(&cluster);
        start(&cluster, &runtime, &resolver);
        assert_eq!(runtime.dns.lock().as_ref().unwrap().generation, 1);
        assert_eq!(resolver.lookups(), 1);
        assert!(Arc::ptr_eq(&runtime.endpoint_list()[0], &endpoint));
        // Another host: the resolver restarts; a.test keeps its endpoint.
        let (more, _) = dns_cluster(&[("a.test", 8080), ("b.test", 8080)], Duration::from_secs(3600));
        runtime.update(&more);
        start(&more, &runtime, &resolver);
        until("b.test", || endpoints(&runtime).len() == 2).await;
        assert!(Arc::ptr_eq(&runtime.endpoint_list()[0], &endpoint));
        // b.test leaves: its address goes with the Snapshot, though a.test's answer is unchanged
        // (an unchanged answer rebuilds nothing, so waiting for one would keep b.test forever).
        runtime.update(&cluster);
        start(&cluster, &runtime, &resolver);
        assert_eq!(
            endpoints(&runtime),
            [("127.0.0.2:8080".to_string(), Some("a.test".to_string()))]
        );
        assert!(Arc::ptr_eq(&runtime.endpoint_list()[0], &endpoint));
        // No longer a DNS cluster: the resolver stops.
        ClusterDns::configure_with(&runtime, &Discovery::Eds, None, resolver.clone());
        until("the task to end", || Arc::strong_count(&resolver) == 1).await;
    }

    #[tokio::test]
    async fn a_new_address_of_a_health_checked_cluster_waits_for_its_first_check() {
        let resolver = Scripted::with(&[(
            "a.test",
            vec![Ok(vec!["127.0.0.2"]), Ok(vec!["127.0.0.2", "127.0.0.3"])],
        )]);
        let (mut cluster, _) = dns_cluster(&[("a.test", 1)], Duration::from_millis(30));
        cluster.upstream.health_check = Some(HealthCheck {
            timeout: Duration::from_millis(100),
            interval: Duration::from_secs(3600),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
            http: HttpHealthCheck {
                host: None,
                path: "/".into(),
                method: None,
            },
            grpc: None,
        });
        let runtime = Arc::new(ClusterRuntime::new(&cluster, true, None));
        start(&cluster, &runtime, &resolver);
        until("both addresses", || endpoints(&runtime).len() == 2).await;
        // Port 1 refuses: the checks fail, and no check has passed on the new address.
        let flags: Vec<String> = runtime.endpoints().into_iter().map(|e| e.health_flags).collect();
        assert_eq!(flags, ["/failed_active_hc", "/failed_active_hc"]);
        let checked = runtime.health_checks.list();
        assert!(
            !checked.is_empty(),
            "health checking follows the resolved endpoints"
        );
    }

    #[tokio::test]
    async fn a_health_check_names_the_endpoints_host() {
        use tokio::io::AsyncReadExt;
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = upstream.local_addr().unwrap().port();
        let resolver = Scripted::with(&[("a.test", vec![Ok(vec!["127.0.0.1"])])]);
        let (mut cluster, _) = dns_cluster(&[("a.test", port)], Duration::from_secs(3600));
        cluster.upstream.health_check = Some(HealthCheck {
            timeout: Duration::from_secs(2),
            interval: Duration::from_secs(3600),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
            http: HttpHealthCheck {
                host: None,
                path: "/healthz".into(),
                method: None,
            },
            grpc: None,
        });
        let runtime = Arc::new(ClusterRuntime::new(&cluster, true, None));
        start(&cluster, &runtime, &resolver);
        let (mut probe, _) = tokio::time::timeout(Duration::from_secs(5), upstream.accept())
            .await
            .unwrap()
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), probe.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the probe closed before its request head");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.contains("\r\nhost: a.test\r\n"), "{head}");
    }

    #[tokio::test]
    async fn with_respect_ttl_a_name_is_resolved_again_when_its_ttl_runs_out() {
        let script: &[Script<'_>] = &[("a.test", vec![Ok(vec!["127.0.0.2"])])];
        // A TTL below the 1 s floor: the floor applies.
        let with_ttl = |ttl| {
            let mut r = Arc::into_inner(Scripted::with(script)).unwrap();
            r.ttl = ttl;
            Arc::new(r)
        };
        let (mut cluster, runtime) = dns_cluster(&[("a.test", 8080)], Duration::from_secs(3600));
        cluster.upstream.dns.as_mut().unwrap().respect_ttl = true;
        let resolver = with_ttl(Some(Duration::from_millis(10)));
        let started = Instant::now();
        start(&cluster, &runtime, &resolver);
        until("a lookup at the TTL", || resolver.lookups() >= 2).await;
        let waited = started.elapsed();
        assert!(
            waited >= MIN_TTL_REFRESH && waited < MIN_TTL_REFRESH * 2,
            "{waited:?}"
        );
        assert_eq!(resolver.asked_ttl.load(Ordering::SeqCst), resolver.lookups());
        runtime.retire();

        // No TTL known (a hosts-file answer): the refresh rate (an hour) applies.
        let (mut cluster, runtime) = dns_cluster(&[("a.test", 8080)], Duration::from_secs(3600));
        cluster.upstream.dns.as_mut().unwrap().respect_ttl = true;
        let no_ttl = with_ttl(None);
        start(&cluster, &runtime, &no_ttl);
        // Without respect_ttl, the TTL is not asked for, nor followed.
        let (plain, plain_runtime) = dns_cluster(&[("a.test", 8080)], Duration::from_secs(3600));
        let ignored = with_ttl(Some(Duration::from_millis(10)));
        start(&plain, &plain_runtime, &ignored);
        until("the first answers", || {
            endpoints(&runtime).len() == 1 && endpoints(&plain_runtime).len() == 1
        })
        .await;
        tokio::time::sleep(MIN_TTL_REFRESH + Duration::from_millis(300)).await;
        assert_eq!((no_ttl.lookups(), ignored.lookups()), (1, 1));
        assert_eq!(ignored.asked_ttl.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn v4_is_preferred_and_answers_are_put_in_order() {
        let ips = |v: &[&str]| v.iter().map(|i| i.parse().unwrap()).collect::<Vec<IpAddr>>();
        let got = v4_preferred(&ips(&["::1", "127.0.0.3", "127.0.0.2", "127.0.0.3"]), 80);
        assert_eq!(
            got,
            ["127.0.0.2:80".parse().unwrap(), "127.0.0.3:80".parse().unwrap()]
        );
        assert_eq!(v4_preferred(&ips(&["::1"]), 80), ["[::1]:80".parse().unwrap()]);
    }

    #[test]
    fn jitter_is_below_its_bound() {
        assert_eq!(random_jitter(None), Duration::ZERO);
        for _ in 0..100 {
            assert!(random_jitter(Some(Duration::from_millis(30))) < Duration::from_millis(30));
        }
    }
}
