//! Load balancing: which of a route's weighted clusters a request goes to, and which endpoint
//! of that cluster serves it, as Envoy picks it, from the cluster's `snapshot::LoadBalancer`.
//!
//! A `Balancer` is built when the cluster's endpoint set or policy changes (never per request):
//! it holds the hosts, the ring (ring hash) or table (maglev), the localities. Health changes
//! (active health checks, outlier detection) flip an atomic on the host and are read per pick,
//! so a pick sees them at once; ring hash and maglev build their ring or table over the healthy
//! hosts again (as Envoy does), off the request path: whoever changed a mark calls
//! `health_changed`, and a blocking task builds the table and swaps it in. Until it is in,
//! picks use the one before (as Envoy's workers do until the main thread's rebuild reaches them).
//!
//! Per pick, in Envoy's order: panic (too few healthy hosts: every host is a candidate,
//! `lb_healthy_panic`), else locality weighted (pick a zone, then a host in it), else zone-aware
//! routing; then the algorithm over the healthy candidates.
//!
//! `update_merge_window` has nothing to delay: Envoy applies host additions and removals at
//! once whatever the window (it merges only health and weight changes of known hosts), and an
//! endpoint update of ours is exactly additions and removals.

mod hash_policy;
mod maglev;
mod ring_hash;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use snapshot::{HashPolicy, LbAlgorithm, LoadBalancer, ZoneAware};

use crate::stats::{self, ClusterStats};

pub(crate) use hash_policy::{Http1Headers, PickContext};

/// Envoy's default `healthy_panic_threshold`, in percent.
const DEFAULT_PANIC_THRESHOLD: u32 = 50;
/// Envoy's default `choice_count` for least request.
const DEFAULT_CHOICE_COUNT: u32 = 2;
/// Envoy's default `min_weight_percent` for slow start.
const DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT: u32 = 10;
/// Envoy's ring hash defaults.
const DEFAULT_MIN_RING_SIZE: u64 = 1024;
const DEFAULT_MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's overprovisioning factor (1.4): a locality keeps its whole weight while 1/1.4 of its
/// hosts are healthy.
const OVERPROVISIONING_FACTOR: f64 = 1.4;

/// What the balancer needs of an endpoint.
pub(crate) trait Host: Send + Sync + 'static {
    fn address(&self) -> SocketAddr;
    fn zone(&self) -> Option<&str>;
    /// The DNS name it was resolved from (a Backend's host), if any.
    fn hostname(&self) -> Option<&str> {
        None
    }
    fn is_healthy(&self) -> bool;
    /// Requests in flight on it (least request).
    fn active_requests(&self) -> u64;
}

/// One host and, when it joined a cluster that already existed, since when (slow start).
pub(crate) struct Member<H> {
    pub host: Arc<H>,
    pub added: Option<Instant>,
}

enum Algorithm<H> {
    RoundRobin,
    LeastRequest { choice_count: u32 },
    Random,
    Hashing(Hashing<H>),
}

/// Ring hash or maglev. As Envoy, the ring or table covers the healthy hosts (every host in
/// panic): built over all of them, and over the healthy ones again when their set changes.
struct Hashing<H> {
    /// Over every host: used while all are healthy, and in panic.
    all: HashTable,
    over_healthy: Arc<HealthyTable<H>>,
}

/// The ring or table over the healthy hosts while some host is unhealthy, rebuilt off the
/// request path (`schedule_rebuild`) and swapped in; picks only load it.
struct HealthyTable<H> {
    kind: HashKind,
    /// `useHostnameForHashing`: hosts are hashed by hostname (see `hash_key`).
    by_hostname: bool,
    hosts: Vec<Arc<H>>,
    /// None while every host is healthy (or none is).
    current: ArcSwapOption<OverHealthy>,
    /// A rebuild is scheduled and has not read the hosts' health yet.
    rebuild_pending: AtomicBool,
    /// One build at a time, so that an older one never lands after a newer one.
    building: Mutex<()>,
}

/// A ring or table over some hosts: their indices, and the table over their addresses.
type OverHealthy = (Vec<u32>, HashTable);

enum HashKind {
    Ring { min_size: u64, max_size: u64 },
    Maglev,
}

enum HashTable {
    Ring(ring_hash::Ring),
    Maglev(maglev::Table),
}

impl HashKind {
    /// The ring or table over hosts known by these keys (see `hash_key`).
    fn build(&self, keys: &[String]) -> HashTable {
        match self {
            HashKind::Ring { min_size, max_size } => {
                HashTable::Ring(ring_hash::Ring::build(keys, *min_size, *max_size))
            }
            HashKind::Maglev => HashTable::Maglev(maglev::Table::build(keys)),
        }
    }
}

/// What a host is hashed by on a ring or table: its address, or with `useHostnameForHashing`
/// its hostname (as Envoy, so that a name keeps its keys whatever it resolves to). A host
/// without one (a Service's endpoint) keeps its address.
fn hash_key<H: Host>(host: &H, by_hostname: bool) -> String {
    match host.hostname() {
        Some(name) if by_hostname => name.to_string(),
        _ => host.address().to_string(),
    }
}

impl HashTable {
    /// The index (among the addresses it was built over) of the host owning `hash`.
    fn owner(&self, hash: u64) -> Option<u32> {
        match self {
            HashTable::Ring(ring) => ring.owner(hash),
            HashTable::Maglev(table) => table.owner(hash),
        }
    }
}

struct SlowStart {
    window: Duration,
    aggression: f64,
    min_weight: f64,
}

struct ZoneRouting {
    config: ZoneAware,
    /// The hosts in the proxy's own zone.
    local: Vec<u32>,
}

/// A cluster's load balancer for one endpoint set and policy.
pub(crate) struct Balancer<H> {
    hosts: Vec<Arc<H>>,
    added: Vec<Option<Instant>>,
    /// Every host's index: the candidates when no locality applies.
    all: Vec<u32>,
    algorithm: Algorithm<H>,
    hash_policies: Vec<HashPolicy>,
    slow_start: Option<SlowStart>,
    /// Past this instant no host is in its slow start window, and picks take the unweighted path.
    slow_start_ends: Option<Instant>,
    panic_threshold: u32,
    /// Hosts grouped by zone, when locality weighted balancing applies and there are two or more.
    localities: Vec<Vec<u32>>,
    locality_cursors: Vec<AtomicUsize>,
    zone_routing: Option<ZoneRouting>,
    cursor: AtomicUsize,
    /// Latched while the cluster is below `min_cluster_size`, so that the stat counts each time
    /// it became too small (as Envoy counts it when it recomputes, not per request).
    zone_too_small: AtomicBool,
}

impl<H: Host> Balancer<H> {
    /// Builds the balancer: `local_zone` is the proxy's own zone (`kgw run --zone`).
    pub(crate) fn new(
        policy: Option<&LoadBalancer>,
        members: Vec<Member<H>>,
        local_zone: Option<&str>,
    ) -> Self {
        let mut members = members;
        // Hash tables and rings are built in address order, so that they do not depend on the
        // order endpoints arrived in.
        if policy
            .and_then(|p| p.algorithm.as_ref())
            .is_some_and(|a| matches!(a, LbAlgorithm::RingHash { .. } | LbAlgorithm::Maglev { .. }))
        {
            members.sort_by_key(|m| m.host.address());
        }
        let hosts: Vec<Arc<H>> = members.iter().map(|m| m.host.clone()).collect();
        let algorithm_config = policy.and_then(|p| p.algorithm.as_ref());
        let by_hostname = matches!(
            algorithm_config,
            Some(
                LbAlgorithm::RingHash {
                    use_hostname_for_hashing: true,
                    ..
                } | LbAlgorithm::Maglev {
                    use_hostname_for_hashing: true,
                    ..
                }
            )
        );
        let algorithm = match algorithm_config {
            None | Some(LbAlgorithm::RoundRobin { .. }) => Algorithm::RoundRobin,
            Some(LbAlgorithm::LeastRequest { choice_count, .. }) => Algorithm::LeastRequest {
                choice_count: choice_count.unwrap_or(DEFAULT_CHOICE_COUNT).max(1),
            },
            Some(LbAlgorithm::Random) => Algorithm::Random,
            Some(LbAlgorithm::RingHash {
                minimum_ring_size,
                maximum_ring_size,
                ..
            }) => Algorithm::Hashing(Hashing::new(
                HashKind::Ring {
                    min_size: minimum_ring_size.unwrap_or(DEFAULT_MIN_RING_SIZE),
                    max_size: maximum_ring_size.unwrap_or(DEFAULT_MAX_RING_SIZE),
                },
                &hosts,
                by_hostname,
            )),
            Some(LbAlgorithm::Maglev { .. }) => {
                Algorithm::Hashing(Hashing::new(HashKind::Maglev, &hosts, by_hostname))
            }
        };
        let slow_start = match algorithm_config {
            Some(LbAlgorithm::RoundRobin { slow_start: Some(s) })
            | Some(LbAlgorithm::LeastRequest {
                slow_start: Some(s), ..
            }) if !s.window.is_zero() => Some(SlowStart {
                window: s.window,
                aggression: s.aggression.as_ref().map(|(a, _)| *a).unwrap_or(1.0),
                min_weight: f64::from(
                    s.min_weight_percent
                        .unwrap_or(DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT)
                        .min(100),
                ) / 100.0,
            }),
            _ => None,
        };
        let added: Vec<Option<Instant>> = members.iter().map(|m| m.added).collect();
        let slow_start_ends = slow_start
            .as_ref()
            .and_then(|s| added.iter().flatten().max().map(|latest| *latest + s.window));
        let is_hashing = matches!(algorithm, Algorithm::Hashing(_));
        // As the dump renders it: round robin, least request and random carry a locality config
        // (zone aware, else locality weighted); the hashing ones carry none; without an
        // algorithm, `common_lb_config` says (locality weighted by default).
        let zone_aware = policy
            .and_then(|p| p.zone_aware)
            .filter(|_| algorithm_config.is_some() && !is_hashing);
        let locality_weighted = match policy {
            None => true,
            Some(p) if p.algorithm.is_none() => p.locality_weighted,
            Some(_) => !is_hashing && zone_aware.is_none(),
        };
        let localities = if locality_weighted {
            group_by_zone(&hosts)
        } else {
            Vec::new()
        };
        // Zone-aware routing needs endpoints in two zones or more (kgateway's rule: with one
        // zone there is nothing to prefer).
        let zones_differ = hosts.iter().any(|h| h.zone() != hosts[0].zone());
        let zone_routing = match (zone_aware, local_zone) {
            (Some(config), Some(zone)) if zones_differ => Some(ZoneRouting {
                config,
                local: (0..hosts.len() as u32)
                    .filter(|&i| hosts[i as usize].zone() == Some(zone))
                    .collect(),
            }),
            _ => None,
        };
        Balancer {
            all: (0..hosts.len() as u32).collect(),
            locality_cursors: localities.iter().map(|_| AtomicUsize::new(0)).collect(),
            localities,
            hosts,
            added,
            algorithm,
            hash_policies: algorithm_config
                .map(|a| a.hash_policies().to_vec())
                .unwrap_or_default(),
            slow_start,
            slow_start_ends,
            panic_threshold: policy
                .and_then(|p| p.healthy_panic_threshold)
                .unwrap_or(DEFAULT_PANIC_THRESHOLD),
            zone_routing,
            cursor: AtomicUsize::new(0),
            zone_too_small: AtomicBool::new(false),
        }
    }

    /// The host for one request; None when no host can take it (the caller answers 503 UH).
    /// A cookie hash policy may leave a `Set-Cookie` value in `context`.
    pub(crate) fn pick(&self, context: &mut PickContext<'_>, stats: &ClusterStats) -> Option<Arc<H>> {
        if self.hosts.is_empty() {
            return None;
        }
        let healthy = self.hosts.iter().filter(|h| h.is_healthy()).count();
        let panic = in_panic(healthy, self.hosts.len(), self.panic_threshold);
        if panic {
            stats::inc(&stats.lb_healthy_panic);
        }
        let eligible = |i: u32| panic || self.hosts[i as usize].is_healthy();
        let index = match &self.algorithm {
            Algorithm::Hashing(hashing) => {
                let hash = self.request_hash(context);
                if panic || healthy == self.hosts.len() {
                    hashing.all.owner(hash)
                } else if healthy == 0 {
                    None
                } else {
                    let mut current = hashing.over_healthy.current.load();
                    // A mark changed and nobody said so (or its rebuild is under way): one
                    // is scheduled; this pick uses the table there is.
                    if current.as_ref().is_none_or(|c| c.0.len() != healthy) {
                        hashing.over_healthy.schedule_rebuild();
                        current = hashing.over_healthy.current.load();
                    }
                    match current.as_ref() {
                        Some(over_healthy) => {
                            let (indices, table) = &**over_healthy;
                            table.owner(hash).map(|i| indices[i as usize])
                        }
                        None => hashing.all.owner(hash),
                    }
                }
            }
            Algorithm::RoundRobin | Algorithm::LeastRequest { .. } | Algorithm::Random => {
                let (candidates, cursor) = self.source(healthy, panic, stats);
                self.pick_among(candidates, cursor, &eligible)
            }
        }?;
        Some(self.hosts[index as usize].clone())
    }

    /// The request's hash from the hash policies; a random one when they produce none (Envoy
    /// then picks a random host).
    fn request_hash(&self, context: &mut PickContext<'_>) -> u64 {
        hash_policy::request_hash(&self.hash_policies, context).unwrap_or_else(random_u64)
    }

    /// A host's health mark changed: ring hash and maglev build their table over the healthy
    /// hosts again, off the request path. Cheap: call it from wherever a mark changes.
    pub(crate) fn health_changed(&self) {
        if let Algorithm::Hashing(hashing) = &self.algorithm {
            hashing.over_healthy.schedule_rebuild();
        }
    }

    /// The hosts this pick chooses among, and the round robin cursor that goes with them.
    fn source(&self, healthy: usize, panic: bool, stats: &ClusterStats) -> (&[u32], &AtomicUsize) {
        if panic {
            return (&self.all, &self.cursor);
        }
        if !self.localities.is_empty()
            && let Some(l) = self.pick_locality()
        {
            return (&self.localities[l], &self.locality_cursors[l]);
        }
        if let Some(zone) = &self.zone_routing
            && self.route_to_local_zone(zone, healthy, stats)
        {
            return (&zone.local, &self.cursor);
        }
        (&self.all, &self.cursor)
    }

    /// A locality by its effective weight: its number of hosts (kgateway weighs a locality as
    /// the sum of its endpoints' weights, 1 each), scaled down as its hosts fail, as Envoy
    /// scales it with the overprovisioning factor; None when none has a healthy host.
    fn pick_locality(&self) -> Option<usize> {
        let weight = |hosts: &[u32]| {
            let healthy = hosts
                .iter()
                .filter(|&&i| self.hosts[i as usize].is_healthy())
                .count();
            let size = hosts.len() as f64;
            size * (OVERPROVISIONING_FACTOR * healthy as f64 / size).min(1.0)
        };
        let total: f64 = self.localities.iter().map(|l| weight(l)).sum();
        if total <= 0.0 {
            return None;
        }
        let mut roll = random_unit() * total;
        let mut last = None;
        for (i, l) in self.localities.iter().enumerate() {
            let w = weight(l);
            if w <= 0.0 {
                continue;
            }
            last = Some(i);
            if roll < w {
                return Some(i);
            }
            roll -= w;
        }
        last
    }

    /// Zone-aware routing without data about the proxy's own cluster (Envoy compares the local
    /// zone's share of upstream hosts to its share of proxies; kgw knows only its own zone):
    /// `force_local_zone` with enough healthy local hosts always stays local; otherwise, with at
    /// least `min_cluster_size` healthy hosts and a healthy local host, `routing_enabled`
    /// percent of requests go to the local zone and the rest to every zone.
    fn route_to_local_zone(&self, zone: &ZoneRouting, healthy: usize, stats: &ClusterStats) -> bool {
        let local_healthy = zone
            .local
            .iter()
            .filter(|&&i| self.hosts[i as usize].is_healthy())
            .count();
        if let Some(min) = zone.config.force_local_zone_min_size
            && local_healthy > 0
            && local_healthy >= min as usize
        {
            stats::inc(&stats.lb_zone_routing_all_directly);
            return true;
        }
        if (healthy as u64) < zone.config.min_cluster_size {
            if !self.zone_too_small.swap(true, Ordering::Relaxed) {
                stats::inc(&stats.lb_zone_cluster_too_small);
            }
            return false;
        }
        self.zone_too_small.store(false, Ordering::Relaxed);
        if random_u64() % 100 >= u64::from(zone.config.routing_enabled) {
            return false;
        }
        if local_healthy == 0 {
            stats::inc(&stats.lb_zone_routing_cross_zone);
            return false;
        }
        stats::inc(&stats.lb_zone_routing_all_directly);
        true
    }

    /// Round robin, least request or random over the eligible candidates, weighted by slow
    /// start while a host is in its window. No allocation.
    fn pick_among(
        &self,
        candidates: &[u32],
        cursor: &AtomicUsize,
        eligible: &dyn Fn(u32) -> bool,
    ) -> Option<u32> {
        let count = candidates.iter().filter(|&&i| eligible(i)).count();
        if count == 0 {
            return None;
        }
        let nth = |n: usize| {
            if count == candidates.len() {
                // All eligible (the usual case): no walk.
                return candidates[n];
            }
            candidates
                .iter()
                .copied()
                .filter(|&i| eligible(i))
                .nth(n)
                // Health changed between the count and now: any candidate will do.
                .unwrap_or(candidates[n % candidates.len()])
        };
        let now_slow = self.slow_start_ends.is_some_and(|ends| Instant::now() < ends);
        match self.algorithm {
            Algorithm::RoundRobin if now_slow => {
                let now = Instant::now();
                self.weighted(candidates, eligible, |i| self.slow_start_weight(i, now))
            }
            Algorithm::RoundRobin => Some(nth(cursor.fetch_add(1, Ordering::Relaxed) % count)),
            Algorithm::LeastRequest { .. } if now_slow => {
                // Envoy's least request with unequal weights: weight / (active requests + 1).
                let now = Instant::now();
                self.weighted(candidates, eligible, |i| {
                    self.slow_start_weight(i, now) / (self.hosts[i as usize].active_requests() + 1) as f64
                })
            }
            Algorithm::LeastRequest { choice_count } => {
                // Envoy's power of `choice_count` choices: sample that many (with replacement)
                // and keep the one with the fewest requests in flight.
                let mut best = nth(random_u64() as usize % count);
                for _ in 1..choice_count {
                    let other = nth(random_u64() as usize % count);
                    if self.hosts[other as usize].active_requests()
                        < self.hosts[best as usize].active_requests()
                    {
                        best = other;
                    }
                }
                Some(best)
            }
            Algorithm::Random | Algorithm::Hashing(_) => Some(nth(random_u64() as usize % count)),
        }
    }

    /// A candidate drawn with probability proportional to `weight`.
    fn weighted(
        &self,
        candidates: &[u32],
        eligible: &dyn Fn(u32) -> bool,
        weight: impl Fn(u32) -> f64,
    ) -> Option<u32> {
        let total: f64 = candidates
            .iter()
            .filter(|&&i| eligible(i))
            .map(|&i| weight(i))
            .sum();
        let mut roll = random_unit() * total;
        let mut last = None;
        for &i in candidates.iter().filter(|&&i| eligible(i)) {
            let w = weight(i);
            last = Some(i);
            if roll < w {
                return Some(i);
            }
            roll -= w;
        }
        last
    }

    /// Envoy's slow start factor: a host added `t` ago, within the window, weighs
    /// max(min_weight, (t / window)^(1 / aggression)); healthy hosts only.
    fn slow_start_weight(&self, i: u32, now: Instant) -> f64 {
        let (Some(slow_start), Some(added)) = (&self.slow_start, self.added[i as usize]) else {
            return 1.0;
        };
        let age = now.saturating_duration_since(added);
        if age >= slow_start.window || !self.hosts[i as usize].is_healthy() {
            return 1.0;
        }
        let time_factor = age.max(Duration::from_millis(1)).as_secs_f64() / slow_start.window.as_secs_f64();
        let scaled = if slow_start.aggression == 1.0 {
            time_factor
        } else {
            time_factor.powf(1.0 / slow_start.aggression)
        };
        scaled.max(slow_start.min_weight)
    }
}

impl<H: Host> Hashing<H> {
    /// Both tables: over every host, and (when some are unhealthy now) over the healthy ones.
    fn new(kind: HashKind, hosts: &[Arc<H>], by_hostname: bool) -> Hashing<H> {
        let keys: Vec<String> = hosts.iter().map(|h| hash_key(&**h, by_hostname)).collect();
        let over_healthy = Arc::new(HealthyTable {
            kind,
            by_hostname,
            hosts: hosts.to_vec(),
            current: ArcSwapOption::empty(),
            rebuild_pending: AtomicBool::new(false),
            building: Mutex::new(()),
        });
        over_healthy.rebuild();
        Hashing {
            all: over_healthy.kind.build(&keys),
            over_healthy,
        }
    }
}

impl<H: Host> HealthyTable<H> {
    /// A rebuild on a blocking thread (a big ring takes seconds); one at a time is pending.
    fn schedule_rebuild(self: &Arc<Self>) {
        if self.rebuild_pending.load(Ordering::Relaxed) || self.rebuild_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || this.rebuild())),
            // Outside a runtime (unit tests): at once.
            Err(_) => this.rebuild(),
        }
    }

    /// Builds the table over the hosts healthy now and swaps it in.
    fn rebuild(&self) {
        let _one_at_a_time = self.building.lock().unwrap_or_else(|e| e.into_inner());
        // Acquire: a mark set before its `schedule_rebuild` is seen below.
        self.rebuild_pending.swap(false, Ordering::AcqRel);
        let healthy: Vec<u32> = (0..self.hosts.len() as u32)
            .filter(|&i| self.hosts[i as usize].is_healthy())
            .collect();
        if healthy.is_empty() || healthy.len() == self.hosts.len() {
            // Picks use the table over every host (or none).
            self.current.store(None);
            return;
        }
        let keys: Vec<String> = healthy
            .iter()
            .map(|&i| hash_key(&*self.hosts[i as usize], self.by_hostname))
            .collect();
        let table = self.kind.build(&keys);
        self.current.store(Some(Arc::new((healthy, table))));
    }
}

/// Envoy: the host set is in panic when its healthy percentage is below the threshold (0
/// turns panic off).
fn in_panic(healthy: usize, total: usize, threshold: u32) -> bool {
    (100.0 * healthy as f64 / total as f64) < f64::from(threshold.min(100))
}

/// Hosts grouped by zone (hosts without one form a locality of their own), in first-seen order;
/// empty when they all share one locality (no choice to make).
fn group_by_zone<H: Host>(hosts: &[Arc<H>]) -> Vec<Vec<u32>> {
    let mut groups: Vec<(Option<&str>, Vec<u32>)> = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        match groups.iter_mut().find(|(z, _)| *z == h.zone()) {
            Some((_, members)) => members.push(i as u32),
            None => groups.push((h.zone(), vec![i as u32])),
        }
    }
    if groups.len() < 2 {
        return Vec::new();
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// Picks a route's cluster by weight (one target: no randomness needed).
pub(crate) fn pick_weighted(targets: &[snapshot::WeightedCluster]) -> &snapshot::WeightedCluster {
    if targets.len() == 1 {
        return &targets[0];
    }
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    let mut roll = random_u64() % total.max(1);
    for t in targets {
        if roll < u64::from(t.weight) {
            return t;
        }
        roll -= u64::from(t.weight);
    }
    &targets[targets.len() - 1]
}

/// A per-thread xorshift: picks need spread, not cryptographic randomness.
pub(crate) fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        // RandomState's keys differ per thread and per process: a seed no two threads share.
        static STATE: Cell<u64> = Cell::new(
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8) | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// A random number in [0, 1).
fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}
