//! Outlier detection (passive health checking), as Envoy's consecutive-error detectors do it.
//!
//! The request path reports the end of each upstream exchange ([`Report`]). Per endpoint we
//! count consecutive 5xx, consecutive gateway failures (502/503/504) and, with
//! `split_external_local_origin_errors`, consecutive local-origin failures (connect failure,
//! reset, timeout); without the split, local-origin failures count as the status Envoy maps them
//! to (503 for a connect failure or reset, 504 for a timeout). When a count reaches its threshold
//! the host is ejected (marked `/failed_outlier_check`, skipped by the load balancer), if the
//! enforcing percentage roll passes and ejecting it keeps the ejected share within
//! `max_ejection_percent`. An ejected host comes back at the first interval sweep after
//! `base_ejection_time x backoff` (capped at `max_ejection_time`, 300 s by default), where the
//! backoff grows by one with each ejection and shrinks by one at each sweep the host spends in
//! rotation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use snapshot::OutlierDetection;

use crate::cluster::{ClusterRuntime, Endpoint};
use crate::stats::{self, MetricKind};

/// Envoy's default `max_ejection_time` (kgateway's API does not set it).
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Envoy's defaults for the gateway-failure detector, which kgateway's API does not configure:
/// it detects (and counts) but does not eject.
const CONSECUTIVE_GATEWAY_FAILURE: u32 = 5;
const ENFORCING_CONSECUTIVE_GATEWAY_FAILURE: u32 = 0;

/// How one upstream exchange ended, as the request path reports it (Envoy's `Result`s and
/// response codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// A new connection to the host was established.
    ConnectSuccess,
    /// The connection could not be opened (refused, unreachable, connect timeout), or it was
    /// reset or closed before a whole response head arrived.
    ConnectFailed,
    /// No response head within the route timeout.
    Timeout,
    /// The upstream answered with this status.
    Status(u16),
}

/// The kind of ejection, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detector {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
}

/// `cluster.<name>.outlier_detection.*`, Envoy's names (the success-rate and failure-percentage
/// detectors, which kgateway does not configure, are left out).
#[derive(Debug, Default)]
pub struct OutlierStats {
    ejections_active: AtomicU64,
    ejections_overflow: AtomicU64,
    /// Deprecated in Envoy but still counted: consecutive-5xx detections that passed the
    /// max-ejection check, enforced or not.
    ejections_total: AtomicU64,
    ejections_enforced_total: AtomicU64,
    ejections_consecutive_5xx: AtomicU64,
    ejections_detected_consecutive_5xx: AtomicU64,
    ejections_enforced_consecutive_5xx: AtomicU64,
    ejections_detected_consecutive_gateway_failure: AtomicU64,
    ejections_enforced_consecutive_gateway_failure: AtomicU64,
    ejections_detected_consecutive_local_origin_failure: AtomicU64,
    ejections_enforced_consecutive_local_origin_failure: AtomicU64,
}

impl OutlierStats {
    /// (name under `cluster.<name>.`, Prometheus family, kind, value).
    pub fn list(&self) -> Vec<(&'static str, &'static str, MetricKind, u64)> {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        macro_rules! stat {
            ($field:ident, $kind:ident) => {
                (
                    concat!("outlier_detection.", stringify!($field)),
                    concat!("outlier_detection_", stringify!($field)),
                    MetricKind::$kind,
                    v(&self.$field),
                )
            };
        }
        vec![
            stat!(ejections_active, Gauge),
            stat!(ejections_overflow, Counter),
            stat!(ejections_total, Counter),
            stat!(ejections_enforced_total, Counter),
            stat!(ejections_consecutive_5xx, Counter),
            stat!(ejections_detected_consecutive_5xx, Counter),
            stat!(ejections_enforced_consecutive_5xx, Counter),
            stat!(ejections_detected_consecutive_gateway_failure, Counter),
            stat!(ejections_enforced_consecutive_gateway_failure, Counter),
            stat!(ejections_detected_consecutive_local_origin_failure, Counter),
            stat!(ejections_enforced_consecutive_local_origin_failure, Counter),
        ]
    }

    fn detected(&self, d: Detector) {
        stats::inc(match d {
            Detector::Consecutive5xx => &self.ejections_detected_consecutive_5xx,
            Detector::ConsecutiveGatewayFailure => &self.ejections_detected_consecutive_gateway_failure,
            Detector::ConsecutiveLocalOriginFailure => {
                &self.ejections_detected_consecutive_local_origin_failure
            }
        });
    }

    fn enforced(&self, d: Detector) {
        stats::inc(&self.ejections_enforced_total);
        stats::inc(match d {
            Detector::Consecutive5xx => &self.ejections_enforced_consecutive_5xx,
            Detector::ConsecutiveGatewayFailure => &self.ejections_enforced_consecutive_gateway_failure,
            Detector::ConsecutiveLocalOriginFailure => {
                &self.ejections_enforced_consecutive_local_origin_failure
            }
        });
    }
}

/// One host's counts and ejection record (Envoy's `DetectorHostMonitor`).
#[derive(Debug, Default)]
struct Monitor {
    consecutive_5xx: u32,
    consecutive_gateway_failure: u32,
    consecutive_local_origin_failure: u32,
    /// When it was last ejected, while it is.
    ejected_at: Option<Instant>,
    /// Multiplies `base_ejection_time`: +1 per ejection, -1 per sweep spent in rotation.
    backoff: u32,
}

/// A cluster's detector for one version of its policy.
pub(crate) struct OutlierDetector {
    config: OutlierDetection,
    hosts: Mutex<Hosts>,
}

#[derive(Default)]
struct Hosts {
    monitors: HashMap<SocketAddr, Monitor>,
    /// Replaced or removed: a report that raced with that ejects nobody (the next detector
    /// would never return the host).
    released: bool,
}

impl OutlierDetector {
    pub(crate) fn new(config: OutlierDetection) -> OutlierDetector {
        OutlierDetector {
            config,
            hosts: Mutex::new(Hosts::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hosts> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one exchange's result for `endpoint`; ejects it when a threshold is reached.
    /// `hosts` is how many endpoints the cluster has; `roll` gives 0..100 for the enforcing
    /// percentages.
    pub(crate) fn report(
        &self,
        endpoint: &Endpoint,
        report: Report,
        hosts: usize,
        stats: &OutlierStats,
        now: Instant,
        roll: &mut dyn FnMut() -> u32,
    ) {
        let mut state = self.lock();
        // Removed (checked under the lock `forget_gone` takes after the removal, so a late report
        // from a request in flight leaves no monitor behind): no count, no ejection.
        if state.released || endpoint.is_removed() {
            return;
        }
        let all = &mut state.monitors;
        let monitor = all.entry(endpoint.address).or_default();
        let detected = if self.config.split_external_local_origin_errors {
            match report {
                Report::ConnectSuccess => {
                    monitor.consecutive_local_origin_failure = 0;
                    None
                }
                Report::ConnectFailed | Report::Timeout => {
                    monitor.consecutive_local_origin_failure += 1;
                    (monitor.consecutive_local_origin_failure
                        == self.config.consecutive_local_origin_failure())
                    .then_some(Detector::ConsecutiveLocalOriginFailure)
                }
                Report::Status(code) => self.count_status(monitor, code),
            }
        } else {
            match report {
                // Envoy leaves it out: the HTTP answer that follows says how the exchange went.
                Report::ConnectSuccess => None,
                Report::ConnectFailed => self.count_status(monitor, 503),
                Report::Timeout => self.count_status(monitor, 504),
                Report::Status(code) => self.count_status(monitor, code),
            }
        };
        let Some(detector) = detected else { return };
        // An ejected host is not ejected again (its counts go on until it returns).
        if monitor.ejected_at.is_some() {
            return;
        }
        stats.detected(detector);
        match detector {
            Detector::Consecutive5xx => {
                stats::inc(&stats.ejections_consecutive_5xx);
                monitor.consecutive_5xx = 0;
            }
            Detector::ConsecutiveGatewayFailure => monitor.consecutive_gateway_failure = 0,
            Detector::ConsecutiveLocalOriginFailure => monitor.consecutive_local_origin_failure = 0,
        }
        let active = all.values().filter(|m| m.ejected_at.is_some()).count();
        // Envoy: ejecting this one must keep the ejected share within max_ejection_percent.
        let share = 100.0 * (active + 1) as f64 / hosts.max(1) as f64;
        if share > f64::from(self.config.max_ejection_percent().min(100)) {
            stats::inc(&stats.ejections_overflow);
            return;
        }
        if detector == Detector::Consecutive5xx {
            stats::inc(&stats.ejections_total);
        }
        let enforcing = match detector {
            Detector::Consecutive5xx => self.config.enforcing_consecutive_5xx(),
            Detector::ConsecutiveGatewayFailure => ENFORCING_CONSECUTIVE_GATEWAY_FAILURE,
            Detector::ConsecutiveLocalOriginFailure => {
                self.config.enforcing_consecutive_local_origin_failure()
            }
        };
        if roll() >= enforcing {
            return;
        }
        let monitor = all.entry(endpoint.address).or_default();
        monitor.ejected_at = Some(now);
        let base = self.config.base_ejection_time();
        let max = MAX_EJECTION_TIME.max(base);
        // Envoy grows the backoff while base x backoff stays below max + base.
        if base * monitor.backoff < max + base {
            monitor.backoff += 1;
        }
        endpoint.health.set_ejected(true);
        stats.enforced(detector);
        stats::inc(&stats.ejections_active);
        tracing::info!(endpoint = %endpoint.address, ?detector, "outlier detection ejected the endpoint");
    }

    /// Envoy's `putHttpResponseCode`: a 5xx adds to the 5xx count (and a 502/503/504 to the
    /// gateway-failure count); anything else resets both.
    fn count_status(&self, monitor: &mut Monitor, code: u16) -> Option<Detector> {
        if !(500..600).contains(&code) {
            monitor.consecutive_5xx = 0;
            monitor.consecutive_gateway_failure = 0;
            return None;
        }
        let mut detected = None;
        if matches!(code, 502..=504) {
            monitor.consecutive_gateway_failure += 1;
            if monitor.consecutive_gateway_failure == CONSECUTIVE_GATEWAY_FAILURE {
                detected = Some(Detector::ConsecutiveGatewayFailure);
            }
        } else {
            monitor.consecutive_gateway_failure = 0;
        }
        monitor.consecutive_5xx += 1;
        if monitor.consecutive_5xx == self.config.consecutive_5xx() {
            // Envoy posts both; the 5xx one comes second and is the one that ejects when both
            // fire at once (the gateway one is not enforced by default).
            detected = Some(Detector::Consecutive5xx);
        }
        detected
    }

    /// Hosts the cluster no longer has are forgotten: they leave the ejected count (and the
    /// max ejection share), and an address that comes back starts fresh.
    fn forget_gone(&self, endpoints: &[Arc<Endpoint>], stats: &OutlierStats) {
        self.lock().monitors.retain(|address, monitor| {
            let present = endpoints.iter().any(|e| e.address == *address);
            if !present && monitor.ejected_at.is_some() {
                stats::dec(&stats.ejections_active);
            }
            present
        });
    }

    /// The interval sweep: hosts ejected for long enough return; those in rotation shrink
    /// their backoff. True if a host returned.
    pub(crate) fn sweep(&self, endpoints: &[Arc<Endpoint>], stats: &OutlierStats, now: Instant) -> bool {
        let mut returned = false;
        self.forget_gone(endpoints, stats);
        let mut hosts = self.lock();
        let all = &mut hosts.monitors;
        let base = self.config.base_ejection_time();
        let max = MAX_EJECTION_TIME.max(base);
        for endpoint in endpoints {
            let Some(monitor) = all.get_mut(&endpoint.address) else {
                continue;
            };
            match monitor.ejected_at {
                None => monitor.backoff = monitor.backoff.saturating_sub(1),
                Some(at) if now.duration_since(at) >= (base * monitor.backoff).min(max) => {
                    monitor.ejected_at = None;
                    // Fresh counts, so that a few errors do not eject it again at once.
                    monitor.consecutive_5xx = 0;
                    monitor.consecutive_gateway_failure = 0;
                    endpoint.health.set_ejected(false);
                    stats::dec(&stats.ejections_active);
                    returned = true;
                    tracing::info!(endpoint = %endpoint.address, "outlier detection returned the endpoint");
                }
                Some(_) => {}
            }
        }
        returned
    }

    /// The policy went away or changed: every host this detector ejected returns.
    fn release(&self, endpoints: &[Arc<Endpoint>], stats: &OutlierStats) {
        let mut hosts = self.lock();
        hosts.released = true;
        for (address, monitor) in hosts.monitors.iter_mut() {
            if monitor.ejected_at.take().is_some() {
                stats::dec(&stats.ejections_active);
                if let Some(e) = endpoints.iter().find(|e| e.address == *address) {
                    e.health.set_ejected(false);
                }
            }
        }
    }
}

/// A cluster's outlier detection: its detector (while its policy has one) and its counters.
#[derive(Default)]
pub struct ClusterOutlierDetection {
    detector: ArcSwapOption<OutlierDetector>,
    /// Whether `detector` is set: what a cluster without outlier detection reads per exchange
    /// (one relaxed load, where an ArcSwap load takes a few atomic read-modify-writes).
    enabled: AtomicBool,
    stats: OutlierStats,
}

impl ClusterOutlierDetection {
    /// The counters, listed only while the cluster has outlier detection (as Envoy creates them
    /// with the detector).
    pub fn stats(&self) -> Option<&OutlierStats> {
        self.detector.load().as_ref().map(|_| &self.stats)
    }

    /// Called by the request path after each upstream exchange.
    pub(crate) fn report(&self, cluster: &ClusterRuntime, endpoint: &Endpoint, report: Report) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let guard = self.detector.load();
        let Some(detector) = guard.as_ref() else { return };
        let was_ejected = endpoint.health.ejected();
        detector.report(
            endpoint,
            report,
            cluster.endpoint_count(),
            &self.stats,
            Instant::now(),
            &mut roll_percent,
        );
        if !was_ejected && endpoint.health.ejected() {
            cluster.health_changed();
        }
    }

    /// Applies the cluster's policy from a new Snapshot: a new or changed policy gets a new
    /// detector (hosts the old one ejected return, as Envoy's rebuilt cluster starts clean) and
    /// its own sweep task; none stops it.
    pub(crate) fn configure(cluster: &Arc<ClusterRuntime>, policy: Option<&OutlierDetection>) {
        let this = &cluster.outlier;
        let current = this.detector.load_full();
        if current.as_ref().map(|d| &d.config) == policy {
            if let Some(detector) = current {
                detector.forget_gone(&cluster.endpoint_list(), &this.stats);
            }
            return;
        }
        let next = policy.map(|p| Arc::new(OutlierDetector::new(*p)));
        this.detector.store(next.clone());
        this.enabled.store(next.is_some(), Ordering::Relaxed);
        if let Some(old) = current {
            old.release(&cluster.endpoint_list(), &this.stats);
            cluster.health_changed();
        }
        if let Some(detector) = next {
            tokio::spawn(sweep_loop(Arc::downgrade(cluster), detector));
        }
    }

    /// The cluster left the Snapshot: its sweep stops.
    pub(crate) fn stop(&self) {
        self.enabled.store(false, Ordering::Relaxed);
        self.detector.store(None);
    }
}

/// 0..100 for the enforcing percentages: a per-thread xorshift (spread, not secrecy).
fn roll_percent() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x % 100) as u32
    })
}

/// Every `interval`, until the cluster is gone or has another detector.
async fn sweep_loop(cluster: Weak<ClusterRuntime>, detector: Arc<OutlierDetector>) {
    let interval = detector.config.interval().max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cluster) = cluster.upgrade() else { return };
        let current = cluster.outlier.detector.load();
        if !current.as_ref().is_some_and(|d| Arc::ptr_eq(d, &detector)) {
            return;
        }
        if detector.sweep(&cluster.endpoint_list(), &cluster.outlier.stats, Instant::now()) {
            cluster.health_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::for_test(
                    format!("127.0.0.1:{}", 8000 + i).parse().unwrap(),
                ))
            })
            .collect()
    }

    fn config(f: impl FnOnce(&mut OutlierDetection)) -> OutlierDetection {
        let mut c = OutlierDetection::default();
        f(&mut c);
        c
    }

    fn always(pass: bool) -> impl FnMut() -> u32 {
        move || if pass { 0 } else { 99 }
    }

    fn value(stats: &OutlierStats, name: &str) -> u64 {
        stats
            .list()
            .into_iter()
            .find(|(n, ..)| n.ends_with(name) && n.len() == "outlier_detection.".len() + name.len())
            .map(|(.., v)| v)
            .unwrap_or_else(|| panic!("no stat {name}"))
    }

    #[test]
    fn consecutive_5xx_ejects_at_the_threshold_and_a_success_resets_the_count() {
        let eps = endpoints(2);
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(3);
            c.max_ejection_percent = Some(50);
        }));
        let s = OutlierStats::default();
        let now = Instant::now();
        let mut roll = always(true);
        for _ in 0..2 {
            d.report(&eps[0], Report::Status(500), 2, &s, now, &mut roll);
        }
        d.report(&eps[0], Report::Status(200), 2, &s, now, &mut roll);
        for _ in 0..2 {
            d.report(&eps[0], Report::Status(500), 2, &s, now, &mut roll);
        }
        assert!(eps[0].health.is_healthy(), "2 in a row after a success: not yet");
        d.report(&eps[0], Report::Status(503), 2, &s, now, &mut roll);
        assert!(eps[0].health.ejected());
        assert_eq!(eps[0].health.flags(), "/failed_outlier_check");
        assert_eq!(value(&s, "ejections_active"), 1);
        assert_eq!(value(&s, "ejections_enforced_total"), 1);
        assert_eq!(value(&s, "ejections_enforced_consecutive_5xx"), 1);
        assert_eq!(value(&s, "ejections_detected_consecutive_5xx"), 1);
        assert_eq!(value(&s, "ejections_consecutive_5xx"), 1);
        assert_eq!(value(&s, "ejections_total"), 1);
        assert!(eps[1].health.is_healthy());
    }

    #[test]
    fn max_ejection_percent_bounds_the_ejected_share_and_counts_overflow() {
        // Envoy: eject only if (ejected + 1) / hosts stays within the percentage. With the
        // default 10% and two hosts, none is ejected.
        let eps = endpoints(2);
        let s = OutlierStats::default();
        let now = Instant::now();
        let d = OutlierDetector::new(config(|c| c.consecutive_5xx = Some(1)));
        d.report(&eps[0], Report::Status(500), 2, &s, now, &mut always(true));
        assert!(eps[0].health.is_healthy());
        assert_eq!(value(&s, "ejections_overflow"), 1);
        assert_eq!(value(&s, "ejections_detected_consecutive_5xx"), 1);
        assert_eq!(value(&s, "ejections_total"), 0);

        // kgateway's e2e: 51% of two hosts ejects one, not both.
        let s = OutlierStats::default();
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(1);
            c.max_ejection_percent = Some(51);
        }));
        d.report(&eps[0], Report::Status(500), 2, &s, now, &mut always(true));
        d.report(&eps[1], Report::Status(500), 2, &s, now, &mut always(true));
        assert!(eps[0].health.ejected());
        assert!(!eps[1].health.ejected());
        assert_eq!(value(&s, "ejections_active"), 1);
        assert_eq!(value(&s, "ejections_overflow"), 1);
    }

    #[test]
    fn the_enforcing_roll_decides_whether_a_detection_ejects() {
        let eps = endpoints(1);
        let s = OutlierStats::default();
        let now = Instant::now();
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(1);
            c.max_ejection_percent = Some(100);
            c.enforcing_consecutive_5xx = Some(30);
        }));
        // A roll of 30 is outside the 30% (0..=29 eject).
        d.report(&eps[0], Report::Status(500), 1, &s, now, &mut || 30);
        assert!(eps[0].health.is_healthy());
        assert_eq!(value(&s, "ejections_detected_consecutive_5xx"), 1);
        assert_eq!(value(&s, "ejections_total"), 1);
        assert_eq!(value(&s, "ejections_enforced_total"), 0);
        d.report(&eps[0], Report::Status(500), 1, &s, now, &mut || 29);
        assert!(eps[0].health.ejected());
        assert_eq!(value(&s, "ejections_enforced_consecutive_5xx"), 1);
    }

    #[test]
    fn without_the_split_local_origin_failures_count_as_5xx() {
        let eps = endpoints(1);
        let s = OutlierStats::default();
        let now = Instant::now();
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(3);
            c.max_ejection_percent = Some(100);
        }));
        d.report(&eps[0], Report::ConnectFailed, 1, &s, now, &mut always(true));
        // A new connection says nothing about the answer: the count goes on.
        d.report(&eps[0], Report::ConnectSuccess, 1, &s, now, &mut always(true));
        d.report(&eps[0], Report::Timeout, 1, &s, now, &mut always(true));
        assert!(eps[0].health.is_healthy());
        d.report(&eps[0], Report::Status(500), 1, &s, now, &mut always(true));
        assert!(eps[0].health.ejected());
        assert_eq!(value(&s, "ejections_enforced_consecutive_5xx"), 1);
        assert_eq!(
            value(&s, "ejections_detected_consecutive_local_origin_failure"),
            0
        );
    }

    #[test]
    fn with_the_split_local_origin_failures_have_their_own_count() {
        let eps = endpoints(1);
        let s = OutlierStats::default();
        let now = Instant::now();
        let d = OutlierDetector::new(config(|c| {
            c.split_external_local_origin_errors = true;
            c.consecutive_5xx = Some(2);
            c.consecutive_local_origin_failure = Some(2);
            c.max_ejection_percent = Some(100);
        }));
        // Local failures do not add to the 5xx count, nor the other way round.
        d.report(&eps[0], Report::ConnectFailed, 1, &s, now, &mut always(true));
        d.report(&eps[0], Report::Status(500), 1, &s, now, &mut always(true));
        // A connection that opens resets the local-origin count.
        d.report(&eps[0], Report::ConnectSuccess, 1, &s, now, &mut always(true));
        d.report(&eps[0], Report::Timeout, 1, &s, now, &mut always(true));
        assert!(eps[0].health.is_healthy());
        d.report(&eps[0], Report::ConnectFailed, 1, &s, now, &mut always(true));
        assert!(eps[0].health.ejected());
        assert_eq!(
            value(&s, "ejections_enforced_consecutive_local_origin_failure"),
            1
        );
        assert_eq!(
            value(&s, "ejections_detected_consecutive_local_origin_failure"),
            1
        );
        assert_eq!(value(&s, "ejections_enforced_consecutive_5xx"), 0);
        assert_eq!(value(&s, "ejections_total"), 0);
    }

    #[test]
    fn gateway_failures_are_detected_but_not_enforced_by_default() {
        let eps = endpoints(1);
        let s = OutlierStats::default();
        let now = Instant::now();
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(100);
            c.max_ejection_percent = Some(100);
        }));
        for _ in 0..5 {
            d.report(&eps[0], Report::Status(502), 1, &s, now, &mut always(true));
        }
        assert!(eps[0].health.is_healthy());
        assert_eq!(value(&s, "ejections_detected_consecutive_gateway_failure"), 1);
        assert_eq!(value(&s, "ejections_enforced_consecutive_gateway_failure"), 0);
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_shrinks_in_rotation() {
        let eps = endpoints(1);
        let s = OutlierStats::default();
        let base = Duration::from_secs(10);
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(1);
            c.max_ejection_percent = Some(100);
            c.base_ejection_time = Some(base);
        }));
        let t0 = Instant::now();
        d.report(&eps[0], Report::Status(500), 1, &s, t0, &mut always(true));
        d.sweep(&eps, &s, t0 + base - Duration::from_millis(1));
        assert!(eps[0].health.ejected(), "first ejection: base x 1");
        d.sweep(&eps, &s, t0 + base);
        assert!(eps[0].health.is_healthy());
        assert_eq!(value(&s, "ejections_active"), 0);

        // Ejected again at once: twice as long.
        let t1 = t0 + base;
        d.report(&eps[0], Report::Status(500), 1, &s, t1, &mut always(true));
        d.sweep(&eps, &s, t1 + base * 2 - Duration::from_millis(1));
        assert!(eps[0].health.ejected(), "second ejection: base x 2");
        let t2 = t1 + base * 2;
        d.sweep(&eps, &s, t2);
        assert!(eps[0].health.is_healthy());

        // Two sweeps in rotation bring the backoff back to 0: the next ejection lasts base.
        d.sweep(&eps, &s, t2);
        d.sweep(&eps, &s, t2);
        d.report(&eps[0], Report::Status(500), 1, &s, t2, &mut always(true));
        d.sweep(&eps, &s, t2 + base);
        assert!(eps[0].health.is_healthy());
        assert_eq!(value(&s, "ejections_enforced_total"), 3);
    }

    #[test]
    fn ejection_time_is_capped_at_max_ejection_time() {
        let eps = endpoints(1);
        let s = OutlierStats::default();
        let base = Duration::from_secs(200);
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(1);
            c.max_ejection_percent = Some(100);
            c.base_ejection_time = Some(base);
        }));
        let mut t = Instant::now();
        for _ in 0..4 {
            d.report(&eps[0], Report::Status(500), 1, &s, t, &mut always(true));
            assert!(eps[0].health.ejected());
            // Never longer than 300 s (Envoy's max_ejection_time default).
            t += MAX_EJECTION_TIME;
            d.sweep(&eps, &s, t);
            assert!(eps[0].health.is_healthy());
        }
    }

    #[test]
    fn an_ejected_host_is_not_ejected_twice_and_leaving_hosts_leave_the_gauge() {
        let eps = endpoints(2);
        let s = OutlierStats::default();
        let now = Instant::now();
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(1);
            c.max_ejection_percent = Some(100);
        }));
        d.report(&eps[0], Report::Status(500), 2, &s, now, &mut always(true));
        d.report(&eps[0], Report::Status(500), 2, &s, now, &mut always(true));
        assert_eq!(value(&s, "ejections_enforced_total"), 1);
        assert_eq!(value(&s, "ejections_active"), 1);
        d.sweep(&eps[1..], &s, now);
        assert_eq!(value(&s, "ejections_active"), 0);
    }

    /// A live cluster with outlier detection (`consecutive_5xx`, ejecting up to 100%) over
    /// `ports` on 127.0.0.1.
    fn cluster_with(ports: &[u16], consecutive_5xx: u32) -> (Arc<ClusterRuntime>, snapshot::Cluster) {
        let policy = config(|c| {
            c.consecutive_5xx = Some(consecutive_5xx);
            c.max_ejection_percent = Some(100);
        });
        let mut cluster = snapshot::Cluster {
            discovery: snapshot::Discovery::Eds,
            name: "c".into(),
            endpoints: Vec::new(),
            protocol: snapshot::UpstreamProtocol::Http1,
            upstream: snapshot::UpstreamPolicy {
                outlier_detection: Some(policy),
                ..Default::default()
            },
        };
        set_ports(&mut cluster, ports);
        let runtime = Arc::new(ClusterRuntime::new(&cluster, true, None));
        ClusterOutlierDetection::configure(&runtime, Some(&policy));
        (runtime, cluster)
    }

    fn set_ports(cluster: &mut snapshot::Cluster, ports: &[u16]) {
        cluster.endpoints = ports
            .iter()
            .map(|&p| snapshot::Endpoint::new(std::net::SocketAddr::from(([127, 0, 0, 1], p))))
            .collect();
    }

    /// As `DataPlane::update` applies a new version of the cluster.
    fn apply(runtime: &Arc<ClusterRuntime>, cluster: &snapshot::Cluster) {
        runtime.update(cluster);
        ClusterOutlierDetection::configure(runtime, cluster.upstream.outlier_detection.as_ref());
    }

    fn active(runtime: &ClusterRuntime) -> u64 {
        value(runtime.outlier.stats().unwrap(), "ejections_active")
    }

    #[tokio::test]
    async fn a_report_for_a_removed_endpoint_ejects_nobody() {
        let (runtime, mut cluster) = cluster_with(&[8001, 8002], 1);
        let removed = runtime.endpoint_list()[1].clone();
        set_ports(&mut cluster, &[8001]);
        apply(&runtime, &cluster);
        // A request that was in flight on it ends with a 5xx.
        runtime.outlier.report(&runtime, &removed, Report::Status(500));
        assert!(!removed.health.ejected());
        assert_eq!(active(&runtime), 0);
    }

    #[tokio::test]
    async fn an_endpoint_that_leaves_leaves_the_ejected_count_and_comes_back_fresh() {
        let (runtime, mut cluster) = cluster_with(&[8001, 8002, 8003], 2);
        let leaving = runtime.endpoint_list()[1].clone();
        runtime.outlier.report(&runtime, &leaving, Report::Status(500));
        runtime.outlier.report(&runtime, &leaving, Report::Status(500));
        assert!(leaving.health.ejected());
        // One 5xx in a row on another host, which leaves too.
        let other = runtime.endpoint_list()[2].clone();
        runtime.outlier.report(&runtime, &other, Report::Status(500));
        set_ports(&mut cluster, &[8001]);
        apply(&runtime, &cluster);
        assert_eq!(active(&runtime), 0, "at once, not at the next sweep (10 s)");

        // The address comes back: a new host, with no count from before.
        set_ports(&mut cluster, &[8001, 8003]);
        apply(&runtime, &cluster);
        let back = runtime.endpoint_list()[1].clone();
        runtime.outlier.report(&runtime, &back, Report::Status(500));
        assert!(!back.health.ejected(), "one 5xx of two");
        assert_eq!(active(&runtime), 0);
    }

    #[test]
    fn release_returns_every_ejected_host() {
        let eps = endpoints(2);
        let s = OutlierStats::default();
        let d = OutlierDetector::new(config(|c| {
            c.consecutive_5xx = Some(1);
            c.max_ejection_percent = Some(100);
        }));
        d.report(
            &eps[0],
            Report::Status(500),
            2,
            &s,
            Instant::now(),
            &mut always(true),
        );
        d.release(&eps, &s);
        assert!(eps[0].health.is_healthy());
        assert_eq!(value(&s, "ejections_active"), 0);
        // A report that raced with the release ejects nobody.
        d.report(
            &eps[1],
            Report::Status(500),
            2,
            &s,
            Instant::now(),
            &mut always(true),
        );
        assert!(eps[1].health.is_healthy());
    }
}
