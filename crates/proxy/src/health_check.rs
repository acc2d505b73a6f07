//! Active health checking, as Envoy's HTTP health checker does it (its gRPC checker, with
//! `healthCheck.grpc`, is `grpc_health.rs`; the rules below hold for both): per endpoint of a cluster
//! with a health check, a task sends `method path` (GET by default) with `Host` (the cluster's
//! name unless set) and `User-Agent: Envoy/HC` every `interval`, on its own connection opened
//! with the cluster's socket options and kept between checks (Envoy's `reuse_connection`).
//!
//! - A 200 answer within `timeout` passes; any other status fails at once (Envoy: a status that
//!   is neither expected nor retriable ignores `unhealthy_threshold`); a connection error, a
//!   malformed answer or the timeout is a network failure, and `unhealthy_threshold` of those in
//!   a row mark the host `/failed_active_hc`.
//! - `healthy_threshold` passes in a row mark it healthy again. A new host starts as
//!   `/failed_active_hc` and its first check runs at once; if that first check passes it is
//!   healthy at once (Envoy's startup rule).
//! - While the cluster has never opened a connection for traffic, checks run every 60 s (Envoy's
//!   `no_traffic_interval`); unlike Envoy, whose timer is armed at the end of a check, the first
//!   request shortens the wait to `interval` from the last check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use snapshot::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::AbortHandle;

use crate::cluster::{ClusterRuntime, Endpoint};
use crate::endpoint_health::EndpointHealth;
use crate::h1::{self, Framing};
use crate::socket_options::SocketOptions;
use crate::stats::{self, MetricKind};
use crate::transport::{ConnectError, Connector, Transport};

/// Envoy's default `no_traffic_interval` (kgateway's API does not set it).
const NO_TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);
/// What a probe's buffer keeps between checks: room for a usual answer head.
const KEPT_BUFFER: usize = 4096;
/// The only status that passes (Envoy's default `expected_statuses`).
const EXPECTED_STATUS: u16 = 200;

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Pass,
    /// Answered with a status other than 200.
    Fail(u16),
    /// Could not connect, the connection broke, or the answer was malformed.
    NetworkFailure,
    /// No whole answer within `timeout`.
    Timeout,
}

/// `cluster.<name>.health_check.*`, Envoy's names.
#[derive(Debug, Default)]
pub struct HealthCheckStats {
    attempt: AtomicU64,
    success: AtomicU64,
    failure: AtomicU64,
    network_failure: AtomicU64,
    /// Envoy's passive and cluster-verification failures: kgw has neither, always 0.
    passive_failure: AtomicU64,
    verify_cluster: AtomicU64,
}

/// The per-host counts of Envoy's `ActiveHealthCheckSession`, apart from timers and I/O.
#[derive(Debug)]
pub(crate) struct Session {
    first_check: bool,
    healthy_in_a_row: u32,
    unhealthy_in_a_row: u32,
}

impl Session {
    pub(crate) fn new() -> Session {
        Session {
            first_check: true,
            healthy_in_a_row: 0,
            unhealthy_in_a_row: 0,
        }
    }

    /// Applies one probe's result to the host's health; true if the host changed state.
    pub(crate) fn record(
        &mut self,
        probe: Probe,
        policy: &HealthCheck,
        health: &EndpointHealth,
        stats: &HealthCheckStats,
    ) -> bool {
        let first = std::mem::replace(&mut self.first_check, false);
        if probe == Probe::Pass {
            stats::inc(&stats.success);
            self.unhealthy_in_a_row = 0;
            if !health.failed_active_hc() {
                return false;
            }
            self.healthy_in_a_row += 1;
            if first || self.healthy_in_a_row >= policy.healthy_threshold {
                health.set_failed_active_hc(false);
                return true;
            }
            return false;
        }
        stats::inc(&stats.failure);
        self.healthy_in_a_row = 0;
        let network = matches!(probe, Probe::NetworkFailure | Probe::Timeout);
        if network {
            stats::inc(&stats.network_failure);
        }
        if health.failed_active_hc() {
            return false;
        }
        self.unhealthy_in_a_row += 1;
        if !network || self.unhealthy_in_a_row >= policy.unhealthy_threshold {
            health.set_failed_active_hc(true);
            return true;
        }
        false
    }
}

/// The request a probe sends; `default_host` is its Host when the health check sets none (the
/// endpoint's hostname, else the cluster's name).
fn request(policy: &HealthCheck, default_host: &str) -> Vec<u8> {
    let method = policy.http.method.as_deref().unwrap_or("GET");
    let host = policy.http.host.as_deref().unwrap_or(default_host);
    format!(
        "{method} {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: Envoy/HC\r\n\r\n",
        policy.http.path
    )
    .into_bytes()
}

/// A probe's connection, kept between checks.
pub(crate) struct ProbeConnection {
    stream: Option<Transport>,
    buf: Vec<u8>,
}

impl ProbeConnection {
    pub(crate) fn new() -> ProbeConnection {
        ProbeConnection {
            stream: None,
            buf: Vec::new(),
        }
    }

    /// Sends one check to `address` and reads its answer, all within `timeout`.
    pub(crate) async fn probe(
        &mut self,
        address: std::net::SocketAddr,
        request: &[u8],
        head_request: bool,
        options: &ProbeConnector,
        timeout: Duration,
    ) -> Probe {
        let exchanged =
            tokio::time::timeout(timeout, self.exchange(address, request, head_request, options)).await;
        // Only a head was ever buffered (bounded by h1's head limit); keep no more than a
        // usual one between checks.
        self.buf.clear();
        self.buf.shrink_to(KEPT_BUFFER);
        match exchanged {
            Ok(Ok(status)) if status == EXPECTED_STATUS => Probe::Pass,
            Ok(Ok(status)) => Probe::Fail(status),
            Ok(Err(e)) => {
                tracing::debug!(%address, "health check: {e}");
                self.stream = None;
                Probe::NetworkFailure
            }
            Err(_) => {
                self.stream = None;
                Probe::Timeout
            }
        }
    }

    async fn exchange(
        &mut self,
        address: std::net::SocketAddr,
        request: &[u8],
        head_request: bool,
        options: &ProbeConnector,
    ) -> std::io::Result<u16> {
        // The peer may have closed the kept connection while it was idle.
        if self
            .stream
            .as_mut()
            .is_some_and(|s| s.ended_while_idle().is_some())
        {
            self.stream = None;
        }
        let (mut stream, head) = match self.stream.take() {
            Some(mut kept) => match self.send(&mut kept, request, head_request).await {
                Ok(head) => (kept, head),
                // The peer closed the kept connection as the check went out (an idle timeout
                // equal to the interval does that): the check goes again on a new one.
                Err(e) if self.buf.is_empty() => {
                    tracing::debug!(%address, "health check: kept connection failed ({e}); reconnecting");
                    let mut fresh = options.connect(address).await?;
                    let head = self.send(&mut fresh, request, head_request).await?;
                    (fresh, head)
                }
                Err(e) => return Err(e),
            },
            None => {
                let mut fresh = options.connect(address).await?;
                let head = self.send(&mut fresh, request, head_request).await?;
                (fresh, head)
            }
        };
        let status = head.status;
        let keep = head.keep_alive;
        // The body is read and dropped (as Envoy's checker, which matches no body, drops it),
        // through a small scratch buffer: a big health page, or a Content-Length never met,
        // costs no memory. Read whole, the connection can carry the next check.
        let early_body = &self.buf[head.len..];
        let mut scratch = [0u8; 4096];
        match head.framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                let mut left = n.saturating_sub(early_body.len() as u64);
                while left > 0 {
                    left = left.saturating_sub(read_some(&mut stream, &mut scratch).await? as u64);
                }
            }
            Framing::Chunked => {
                let malformed = |_| std::io::Error::other("malformed chunked body");
                let mut scanner = h1::ChunkedScanner::default();
                scanner.feed(early_body).map_err(malformed)?;
                while !scanner.is_done() {
                    let n = read_some(&mut stream, &mut scratch).await?;
                    scanner.feed(&scratch[..n]).map_err(malformed)?;
                }
            }
            Framing::UntilClose => while stream.read(&mut scratch).await? > 0 {},
        }
        if keep {
            self.stream = Some(stream);
        }
        Ok(status)
    }
}

impl ProbeConnection {
    /// Writes the request and reads the answer's head (past interim answers).
    async fn send(
        &mut self,
        stream: &mut Transport,
        request: &[u8],
        head_request: bool,
    ) -> std::io::Result<h1::ResponseHead> {
        self.buf.clear();
        stream.split().1.write_all(request).await?;
        let method: &[u8] = if head_request { b"HEAD" } else { b"GET" };
        loop {
            match h1::parse_response(&self.buf, method) {
                Ok(Some(head)) if (100..200).contains(&head.status) => {
                    // An interim answer: the final one follows.
                    self.buf.drain(..head.len);
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => read_more(stream, &mut self.buf).await?,
                Err(e) => return Err(std::io::Error::other(format!("malformed answer: {e:?}"))),
            }
        }
    }
}

async fn read_more(stream: &mut Transport, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = read_some(stream, &mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads at least one byte into `into`; the peer closing is an error (the answer is not whole).
async fn read_some(stream: &mut Transport, into: &mut [u8]) -> std::io::Result<usize> {
    match stream.read(into).await? {
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before a whole answer",
        )),
        n => Ok(n),
    }
}

/// How a probe's connection is opened: with the cluster's connector, socket options and
/// connect timeout, as its traffic's connections are (the health check's timeout bounds it too).
pub(crate) struct ProbeConnector {
    pub options: SocketOptions,
    pub connect_timeout: Duration,
    /// The cluster's PROXY protocol: a probe's connection carries the header too, naming no
    /// client (as Envoy's health checks through its transport socket: v1 the connection's own
    /// addresses, v2 LOCAL).
    pub proxy_protocol: Option<snapshot::ProxyProtocolVersion>,
    /// The cluster's upstream TLS: Envoy health checks through the cluster's transport socket.
    pub tls: Option<Arc<crate::upstream_tls::ClientTls>>,
}

impl ProbeConnector {
    fn of(cluster: &ClusterRuntime) -> ProbeConnector {
        let policy = cluster.policy();
        ProbeConnector {
            options: cluster.socket_options(&policy),
            connect_timeout: policy.connect_timeout(),
            proxy_protocol: policy.proxy_protocol,
            tls: cluster.tls.client(),
        }
    }

    pub(crate) async fn connect(&self, address: std::net::SocketAddr) -> std::io::Result<Transport> {
        // The cluster keeps no handle on a probe's socket: it is not traffic.
        let (connector, _handle) = Connector::new(address, &self.options)?;
        connector
            .connect(
                self.connect_timeout,
                self.proxy_protocol.map(|v| (v, None)),
                self.tls.clone(),
            )
            .await
            .map_err(|e| match e {
                ConnectError::Timeout => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"),
                ConnectError::Failed(e) => e,
            })
    }
}

/// A cluster's health checking: the policy being applied, a task per endpoint, the counters.
#[derive(Default)]
pub struct ClusterHealthChecking {
    state: Mutex<Option<Checking>>,
    stats: HealthCheckStats,
}

struct Checking {
    policy: HealthCheck,
    /// Changes with the policy: a task of an older one records nothing.
    generation: u64,
    sessions: Vec<(Arc<Endpoint>, AbortHandle)>,
}

impl Drop for Checking {
    fn drop(&mut self) {
        for (_, task) in &self.sessions {
            task.abort();
        }
    }
}

impl ClusterHealthChecking {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Checking>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `cluster.<name>.health_check.*` (name under the cluster, Prometheus family, kind, value),
    /// only while the cluster has a health check (Envoy creates them with the checker).
    pub fn list(&self) -> Vec<(&'static str, &'static str, MetricKind, u64)> {
        let state = self.lock();
        let Some(checking) = state.as_ref() else {
            return Vec::new();
        };
        let healthy = checking
            .sessions
            .iter()
            .filter(|(e, _)| !e.health.failed_active_hc())
            .count() as u64;
        let s = &self.stats;
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "health_check.attempt",
                "health_check_attempt",
                MetricKind::Counter,
                v(&s.attempt),
            ),
            (
                "health_check.degraded",
                "health_check_degraded",
                MetricKind::Gauge,
                0,
            ),
            (
                "health_check.failure",
                "health_check_failure",
                MetricKind::Counter,
                v(&s.failure),
            ),
            (
                "health_check.healthy",
                "health_check_healthy",
                MetricKind::Gauge,
                healthy,
            ),
            (
                "health_check.network_failure",
                "health_check_network_failure",
                MetricKind::Counter,
                v(&s.network_failure),
            ),
            (
                "health_check.passive_failure",
                "health_check_passive_failure",
                MetricKind::Counter,
                v(&s.passive_failure),
            ),
            (
                "health_check.success",
                "health_check_success",
                MetricKind::Counter,
                v(&s.success),
            ),
            (
                "health_check.verify_cluster",
                "health_check_verify_cluster",
                MetricKind::Counter,
                v(&s.verify_cluster),
            ),
        ]
    }

    /// Applies the cluster's policy and endpoints from a new Snapshot: a task per endpoint,
    /// started for new endpoints (which start as `/failed_active_hc`), stopped for those that
    /// left; all restarted when the policy changes (keeping each host's health); all stopped,
    /// and their marks cleared, when the policy goes away.
    pub(crate) fn configure(cluster: &Arc<ClusterRuntime>, policy: Option<&HealthCheck>) {
        let this = &cluster.health_checks;
        let mut state = this.lock();
        let Some(policy) = policy else {
            if let Some(old) = state.take() {
                for (endpoint, _) in &old.sessions {
                    endpoint.health.set_failed_active_hc(false);
                }
                cluster.health_changed();
            }
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(cluster = cluster.name(), "no runtime to run health checks on");
            return;
        };
        let previous_generation = state.as_ref().map_or(0, |c| c.generation);
        let mut generation = previous_generation + 1;
        let (checked_before, mut sessions) = match state.take() {
            // Same policy: keep the tasks of endpoints still there.
            Some(mut old) if old.policy == *policy => {
                generation = previous_generation;
                let kept = std::mem::take(&mut old.sessions);
                (Vec::new(), kept)
            }
            // A new policy: every task restarts with it; hosts keep their health.
            Some(mut old) => {
                let before: Vec<Arc<Endpoint>> = std::mem::take(&mut old.sessions)
                    .into_iter()
                    .map(|(e, task)| {
                        task.abort();
                        e
                    })
                    .collect();
                (before, Vec::new())
            }
            None => (Vec::new(), Vec::new()),
        };
        let endpoints = cluster.endpoint_list();
        sessions.retain(|(e, task)| {
            let present = endpoints.iter().any(|n| Arc::ptr_eq(n, e));
            if !present {
                task.abort();
            }
            present
        });
        for endpoint in endpoints.iter() {
            if sessions.iter().any(|(e, _)| Arc::ptr_eq(e, endpoint)) {
                continue;
            }
            if !checked_before.iter().any(|e| Arc::ptr_eq(e, endpoint)) {
                // Envoy: a host of a health-checked cluster is unhealthy until a check passes.
                endpoint.health.set_failed_active_hc(true);
            }
            let task = runtime.spawn(check_loop(
                Arc::downgrade(cluster),
                endpoint.clone(),
                policy.clone(),
                generation,
            ));
            sessions.push((endpoint.clone(), task.abort_handle()));
        }
        *state = Some(Checking {
            policy: policy.clone(),
            generation,
            sessions,
        });
        // New hosts were marked.
        cluster.health_changed();
    }

    /// Runs `record` if the task of `generation` is still current, under the lock that
    /// `configure` takes (so a result that raced with a policy change or removal is dropped).
    fn if_current<R>(&self, generation: u64, record: impl FnOnce(&HealthCheckStats) -> R) -> Option<R> {
        let state = self.lock();
        state.as_ref().filter(|c| c.generation == generation)?;
        Some(record(&self.stats))
    }

    /// The cluster left the Snapshot: every task stops.
    pub(crate) fn stop(&self) {
        self.lock().take();
    }
}

/// One endpoint's checks, until aborted or the cluster is gone.
async fn check_loop(
    cluster: Weak<ClusterRuntime>,
    endpoint: Arc<Endpoint>,
    policy: HealthCheck,
    generation: u64,
) {
    let mut session = Session::new();
    let mut connection = ProbeConnection::new();
    // With `grpc`, gRPC probes instead (grpc_health.rs).
    let mut grpc_probe = crate::grpc_health::GrpcProbe::default();
    let head_request = policy
        .http
        .method
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("HEAD"));
    let interval = policy.interval.max(Duration::from_millis(1));
    loop {
        let (request, host, options) = {
            let Some(cluster) = cluster.upgrade() else { return };
            stats::inc(&cluster.health_checks.stats.attempt);
            // Envoy's Host (or gRPC authority): the health check's own, else the endpoint's
            // hostname (kgateway gives a Backend's endpoints theirs), else the cluster's name.
            let host = endpoint.hostname.as_deref().unwrap_or(cluster.name());
            (
                request(&policy, host),
                host.to_string(),
                ProbeConnector::of(&cluster),
            )
        };
        let probe = match &policy.grpc {
            Some(grpc) => {
                grpc_probe
                    .probe(endpoint.address, grpc, &host, &options, policy.timeout)
                    .await
            }
            None => {
                connection
                    .probe(endpoint.address, &request, head_request, &options, policy.timeout)
                    .await
            }
        };
        {
            let Some(cluster) = cluster.upgrade() else { return };
            let changed = cluster.health_checks.if_current(generation, |stats| {
                session.record(probe, &policy, &endpoint.health, stats)
            });
            let Some(changed) = changed else { return };
            if changed {
                cluster.health_changed();
                tracing::info!(
                    cluster = cluster.name(),
                    endpoint = %endpoint.address,
                    ?probe,
                    healthy = !endpoint.health.failed_active_hc(),
                    "active health check changed the endpoint's health"
                );
            }
        }
        let checked_at = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            let Some(cluster) = cluster.upgrade() else { return };
            if cluster.has_had_traffic() || checked_at.elapsed() >= NO_TRAFFIC_INTERVAL {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot::HttpHealthCheck;
    use tokio::net::TcpListener;

    fn policy(unhealthy: u32, healthy: u32) -> HealthCheck {
        HealthCheck {
            timeout: Duration::from_millis(300),
            interval: Duration::from_secs(1),
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
            http: HttpHealthCheck {
                host: None,
                path: "/healthz".into(),
                method: None,
            },
            grpc: None,
        }
    }

    #[test]
    fn a_new_host_is_healthy_after_its_first_passing_check() {
        let health = EndpointHealth::default();
        health.set_failed_active_hc(true);
        let stats = HealthCheckStats::default();
        let mut s = Session::new();
        assert!(s.record(Probe::Pass, &policy(3, 2), &health, &stats));
        assert!(!health.failed_active_hc());
        assert_eq!(stats.success.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_new_host_whose_first_check_fails_needs_healthy_threshold_passes() {
        let health = EndpointHealth::default();
        health.set_failed_active_hc(true);
        let stats = HealthCheckStats::default();
        let p = policy(3, 2);
        let mut s = Session::new();
        assert!(!s.record(Probe::Fail(503), &p, &health, &stats));
        assert!(!s.record(Probe::Pass, &p, &health, &stats));
        assert!(health.failed_active_hc());
        assert!(s.record(Probe::Pass, &p, &health, &stats));
        assert!(!health.failed_active_hc());
    }

    #[test]
    fn network_failures_count_toward_unhealthy_threshold() {
        let health = EndpointHealth::default();
        let stats = HealthCheckStats::default();
        let p = policy(3, 2);
        let mut s = Session::new();
        s.record(Probe::Pass, &p, &health, &stats);
        assert!(!s.record(Probe::NetworkFailure, &p, &health, &stats));
        assert!(!s.record(Probe::Timeout, &p, &health, &stats));
        // A pass in between starts the count again.
        s.record(Probe::Pass, &p, &health, &stats);
        assert!(!s.record(Probe::Timeout, &p, &health, &stats));
        assert!(!s.record(Probe::NetworkFailure, &p, &health, &stats));
        assert!(!health.failed_active_hc());
        assert!(s.record(Probe::NetworkFailure, &p, &health, &stats));
        assert!(health.failed_active_hc());
        assert_eq!(health.flags(), "/failed_active_hc");
        assert_eq!(stats.failure.load(Ordering::Relaxed), 5);
        assert_eq!(stats.network_failure.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_wrong_status_is_unhealthy_at_once() {
        let health = EndpointHealth::default();
        let stats = HealthCheckStats::default();
        let p = policy(3, 2);
        let mut s = Session::new();
        s.record(Probe::Pass, &p, &health, &stats);
        assert!(s.record(Probe::Fail(500), &p, &health, &stats));
        assert!(health.failed_active_hc());
        assert_eq!(stats.network_failure.load(Ordering::Relaxed), 0);
        // And healthy_threshold passes in a row bring it back.
        assert!(!s.record(Probe::Pass, &p, &health, &stats));
        assert!(!s.record(Probe::Fail(404), &p, &health, &stats));
        assert!(!s.record(Probe::Pass, &p, &health, &stats));
        assert!(s.record(Probe::Pass, &p, &health, &stats));
        assert!(health.is_healthy());
    }

    #[test]
    fn an_endpoint_added_to_a_health_checked_cluster_takes_no_traffic_before_its_first_check() {
        let endpoint = |port| snapshot::Endpoint::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        let mut cluster = snapshot::Cluster {
            discovery: snapshot::Discovery::Eds,
            name: "c".into(),
            endpoints: vec![endpoint(1)],
            protocol: snapshot::UpstreamProtocol::Http1,
            upstream: snapshot::UpstreamPolicy {
                health_check: Some(policy(3, 2)),
                ..Default::default()
            },
        };
        let runtime = ClusterRuntime::new(&cluster, true, None);
        cluster.endpoints.push(endpoint(2));
        runtime.update(&cluster);
        // Before `configure` starts its checks (DataPlane::update runs it after every
        // cluster's update), no endpoint may be picked.
        let flags: Vec<String> = runtime.endpoints().into_iter().map(|e| e.health_flags).collect();
        assert_eq!(flags, ["/failed_active_hc", "/failed_active_hc"]);
    }

    #[test]
    fn the_request_names_the_host_or_the_cluster() {
        let mut p = policy(1, 1);
        assert_eq!(
            request(&p, "kube_default_httpbin_8080"),
            b"GET /healthz HTTP/1.1\r\nhost: kube_default_httpbin_8080\r\nuser-agent: Envoy/HC\r\n\r\n"
        );
        p.http.host = Some("example.com".into());
        p.http.method = Some("HEAD".into());
        assert_eq!(
            request(&p, "c"),
            b"HEAD /healthz HTTP/1.1\r\nhost: example.com\r\nuser-agent: Envoy/HC\r\n\r\n"
        );
    }

    /// A server answering each request on a connection with the next of `answers`, recording
    /// what it got and on which connection.
    async fn server(answers: Vec<&'static str>) -> (std::net::SocketAddr, Arc<Mutex<Vec<(usize, String)>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let answers = Arc::new(Mutex::new(answers.into_iter()));
            let mut conn_id = 0;
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                conn_id += 1;
                let (answers, log) = (answers.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 1024];
                        let n = match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let req: Vec<u8> = buf.drain(..end + 4).collect();
                            log.lock()
                                .unwrap()
                                .push((conn_id, String::from_utf8_lossy(&req).into_owned()));
                            let Some(answer) = answers.lock().unwrap().next() else {
                                return;
                            };
                            if answer == "drop" {
                                return;
                            }
                            if answer == "hang" {
                                tokio::time::sleep(Duration::from_secs(10)).await;
                                return;
                            }
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                            if answer.contains("close") {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    fn options() -> ProbeConnector {
        ProbeConnector {
            options: SocketOptions {
                tcp_keepalive: Some(snapshot::TcpKeepalive {
                    probes: Some(3),
                    time: Some(30),
                    interval: Some(5),
                }),
                tcp_user_timeout: true,
            },
            connect_timeout: Duration::from_secs(1),
            proxy_protocol: None,
            tls: None,
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    const OK_CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    const DOWN: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown";
    const OK_CLOSE: &str = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

    #[tokio::test]
    async fn probes_reuse_their_connection_and_read_each_answer_whole() {
        let (addr, seen) = server(vec![OK, OK_CHUNKED, DOWN, OK]).await;
        let request = request(&policy(1, 1), "cluster_a");
        let mut conn = ProbeConnection::new();
        let t = Duration::from_secs(2);
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::Pass
        );
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::Pass
        );
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::Fail(503)
        );
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::Pass
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4);
        assert!(
            seen.iter().all(|(id, _)| *id == 1),
            "one connection for every check: {seen:?}"
        );
        assert!(seen[0].1.starts_with("GET /healthz HTTP/1.1\r\n"));
        assert!(seen[0].1.contains("host: cluster_a\r\n"));
        assert!(seen[0].1.contains("user-agent: Envoy/HC\r\n"));
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced_not_counted_as_a_failure() {
        let (addr, seen) = server(vec![OK_CLOSE, OK]).await;
        let request = request(&policy(1, 1), "c");
        let mut conn = ProbeConnection::new();
        let t = Duration::from_secs(2);
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::Pass
        );
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::Pass
        );
        let ids: Vec<usize> = seen.lock().unwrap().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_kept_connection_closed_as_the_check_goes_out_is_retried_on_a_new_one() {
        let (addr, seen) = server(vec![OK, "drop", OK, "drop", "drop"]).await;
        let request = request(&policy(1, 1), "c");
        let mut conn = ProbeConnection::new();
        let t = Duration::from_secs(2);
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::Pass
        );
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::Pass
        );
        let ids: Vec<usize> = seen.lock().unwrap().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 1, 2]);
        // Once only: a new connection that fails too is a network failure.
        assert_eq!(
            conn.probe(addr, &request, false, &options(), t).await,
            Probe::NetworkFailure
        );
    }

    #[tokio::test]
    async fn no_answer_within_the_timeout_is_a_timeout_and_a_refused_connect_a_network_failure() {
        let (addr, _) = server(vec!["hang"]).await;
        let request = request(&policy(1, 1), "c");
        let mut conn = ProbeConnection::new();
        let started = std::time::Instant::now();
        let got = conn
            .probe(addr, &request, false, &options(), Duration::from_millis(200))
            .await;
        assert_eq!(got, Probe::Timeout);
        assert!(started.elapsed() < Duration::from_secs(2));

        // A port with nobody listening.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let got = conn
            .probe(closed, &request, false, &options(), Duration::from_secs(2))
            .await;
        assert_eq!(got, Probe::NetworkFailure);
    }

    #[tokio::test]
    async fn a_malformed_answer_is_a_network_failure() {
        let (addr, _) = server(vec!["SMTP ready\r\n\r\n"]).await;
        let request = request(&policy(1, 1), "c");
        let mut conn = ProbeConnection::new();
        let got = conn
            .probe(addr, &request, false, &options(), Duration::from_secs(2))
            .await;
        assert_eq!(got, Probe::NetworkFailure);
    }

    #[tokio::test]
    async fn a_big_or_endless_body_is_discarded_without_holding_its_size() {
        let big = |framing: &str, body: String| -> &'static str {
            Box::leak(format!("HTTP/1.1 200 OK\r\n{framing}\r\n\r\n{body}").into_boxed_str())
        };
        let five_mb = 5 * 1024 * 1024;
        let by_length = big(&format!("content-length: {five_mb}"), "x".repeat(five_mb));
        let chunk = 1024 * 1024;
        let chunked = big(
            "transfer-encoding: chunked",
            format!("{chunk:x}\r\n{}\r\n", "y".repeat(chunk)).repeat(5) + "0\r\n\r\n",
        );
        // A Content-Length far past what is sent: the server then waits for the next request.
        let bogus_length = big("content-length: 100000000", "z".repeat(chunk));
        let (addr, seen) = server(vec![by_length, chunked, OK, bogus_length]).await;
        let request = request(&policy(1, 1), "c");
        let mut conn = ProbeConnection::new();
        let t = Duration::from_secs(5);
        let held = 64 * 1024;
        for _ in 0..3 {
            assert_eq!(
                conn.probe(addr, &request, false, &options(), t).await,
                Probe::Pass
            );
            assert!(conn.buf.capacity() <= held, "holds {} bytes", conn.buf.capacity());
        }
        let ids: Vec<usize> = seen.lock().unwrap().iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            vec![1, 1, 1],
            "each body read whole: the connection carries the next check"
        );
        let got = conn
            .probe(addr, &request, false, &options(), Duration::from_millis(500))
            .await;
        assert_eq!(got, Probe::Timeout);
        assert!(conn.buf.capacity() <= held, "holds {} bytes", conn.buf.capacity());
    }

    #[tokio::test]
    async fn a_head_check_reads_no_body() {
        // The answer to HEAD announces a body it does not send.
        let (addr, seen) = server(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
        ])
        .await;
        let mut p = policy(1, 1);
        p.http.method = Some("HEAD".into());
        let request = request(&p, "c");
        let mut conn = ProbeConnection::new();
        let t = Duration::from_secs(2);
        assert_eq!(conn.probe(addr, &request, true, &options(), t).await, Probe::Pass);
        assert_eq!(conn.probe(addr, &request, true, &options(), t).await, Probe::Pass);
        assert!(
            seen.lock().unwrap()[0]
                .1
                .starts_with("HEAD /healthz HTTP/1.1\r\n")
        );
    }
}
