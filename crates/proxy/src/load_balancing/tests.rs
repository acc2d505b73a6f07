use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use snapshot::{CookieHash, HashPolicy, HashSource, LbAlgorithm, LoadBalancer, SlowStart, ZoneAware};

use super::hash_policy::RequestHeaders;
use super::*;
use crate::stats::ClusterStats;

struct TestHost {
    address: SocketAddr,
    zone: Option<String>,
    hostname: Option<String>,
    healthy: AtomicBool,
    active: AtomicU64,
}

impl Host for TestHost {
    fn address(&self) -> SocketAddr {
        self.address
    }
    fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }
    fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }
    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    fn active_requests(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

fn host(port: u16, zone: Option<&str>) -> Arc<TestHost> {
    Arc::new(TestHost {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        zone: zone.map(str::to_string),
        hostname: None,
        healthy: AtomicBool::new(true),
        active: AtomicU64::new(0),
    })
}

fn hosts(n: u16) -> Vec<Arc<TestHost>> {
    (1..=n).map(|p| host(8000 + p, None)).collect()
}

fn members(hosts: &[Arc<TestHost>]) -> Vec<Member<TestHost>> {
    hosts
        .iter()
        .map(|h| Member {
            host: h.clone(),
            added: None,
        })
        .collect()
}

fn lb(algorithm: LbAlgorithm) -> LoadBalancer {
    LoadBalancer {
        algorithm: Some(algorithm),
        ..LoadBalancer::default()
    }
}

struct Headers(Vec<(&'static str, String)>);

impl RequestHeaders for Headers {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
            .collect()
    }
}

fn no_headers() -> Headers {
    Headers(Vec::new())
}

fn client() -> SocketAddr {
    "10.0.0.7:40000".parse().unwrap()
}

fn pick_port(b: &Balancer<TestHost>, headers: &Headers, stats: &ClusterStats) -> Option<u16> {
    let mut context = PickContext::new(headers, client());
    b.pick(&mut context, stats).map(|h| h.address.port())
}

/// Picks `n` times and counts by port.
fn spread(b: &Balancer<TestHost>, n: usize) -> HashMap<u16, usize> {
    let stats = ClusterStats::default();
    let mut out = HashMap::new();
    for _ in 0..n {
        *out.entry(pick_port(b, &no_headers(), &stats).unwrap())
            .or_default() += 1;
    }
    out
}

fn ring(hash_policies: Vec<HashPolicy>) -> LoadBalancer {
    lb(LbAlgorithm::RingHash {
        minimum_ring_size: None,
        maximum_ring_size: None,
        hash_policies,
        use_hostname_for_hashing: false,
    })
}

fn header_policy(name: &str) -> HashPolicy {
    HashPolicy {
        source: HashSource::Header(name.into()),
        terminal: false,
    }
}

#[test]
fn round_robin_is_the_default_and_alternates() {
    let hs = hosts(3);
    let b = Balancer::new(None, members(&hs), None);
    let stats = ClusterStats::default();
    let picks: Vec<u16> = (0..6)
        .map(|_| pick_port(&b, &no_headers(), &stats).unwrap())
        .collect();
    assert_eq!(picks, [8001, 8002, 8003, 8001, 8002, 8003]);
}

#[test]
fn no_hosts_no_pick() {
    let b: Balancer<TestHost> = Balancer::new(None, Vec::new(), None);
    assert_eq!(pick_port(&b, &no_headers(), &ClusterStats::default()), None);
}

#[test]
fn unhealthy_hosts_are_skipped_above_the_panic_threshold() {
    let hs = hosts(3);
    hs[1].healthy.store(false, Ordering::Relaxed);
    let b = Balancer::new(None, members(&hs), None);
    let stats = ClusterStats::default();
    let picks: Vec<u16> = (0..4)
        .map(|_| pick_port(&b, &no_headers(), &stats).unwrap())
        .collect();
    // 2 of 3 healthy (66%) is above Envoy's default 50%: round robin over the healthy ones.
    assert_eq!(picks, [8001, 8003, 8001, 8003]);
    assert_eq!(stats.lb_healthy_panic.load(Ordering::Relaxed), 0);
}

#[test]
fn below_the_panic_threshold_every_host_is_picked_and_counted() {
    let hs = hosts(3);
    hs[0].healthy.store(false, Ordering::Relaxed);
    hs[1].healthy.store(false, Ordering::Relaxed);
    let b = Balancer::new(None, members(&hs), None);
    let stats = ClusterStats::default();
    let picks: Vec<u16> = (0..3)
        .map(|_| pick_port(&b, &no_headers(), &stats).unwrap())
        .collect();
    assert_eq!(picks, [8001, 8002, 8003], "33% healthy < 50%: panic, all hosts");
    assert_eq!(stats.lb_healthy_panic.load(Ordering::Relaxed), 3);

    // A threshold of 20%: 33% healthy is enough, only the healthy host.
    let policy = LoadBalancer {
        healthy_panic_threshold: Some(20),
        ..LoadBalancer::default()
    };
    let b = Balancer::new(Some(&policy), members(&hs), None);
    let stats = ClusterStats::default();
    for _ in 0..3 {
        assert_eq!(pick_port(&b, &no_headers(), &stats), Some(8003));
    }
    assert_eq!(stats.lb_healthy_panic.load(Ordering::Relaxed), 0);
}

#[test]
fn a_zero_panic_threshold_never_panics_and_no_healthy_host_means_no_pick() {
    let hs = hosts(2);
    for h in &hs {
        h.healthy.store(false, Ordering::Relaxed);
    }
    let policy = LoadBalancer {
        healthy_panic_threshold: Some(0),
        ..LoadBalancer::default()
    };
    let b = Balancer::new(Some(&policy), members(&hs), None);
    let stats = ClusterStats::default();
    assert_eq!(pick_port(&b, &no_headers(), &stats), None);
    assert_eq!(stats.lb_healthy_panic.load(Ordering::Relaxed), 0);
    // With the default threshold, all unhealthy is panic: a host is still picked.
    let b = Balancer::new(None, members(&hs), None);
    assert!(pick_port(&b, &no_headers(), &stats).is_some());
    assert_eq!(stats.lb_healthy_panic.load(Ordering::Relaxed), 1);
}

#[test]
fn least_request_prefers_the_idle_host() {
    let hs = hosts(2);
    hs[0].active.store(5, Ordering::Relaxed);
    let b = Balancer::new(
        Some(&lb(LbAlgorithm::LeastRequest {
            choice_count: None,
            slow_start: None,
        })),
        members(&hs),
        None,
    );
    let counts = spread(&b, 1000);
    // Two choices with replacement: only both on the busy host (1 in 4) picks it.
    let busy = counts.get(&8001).copied().unwrap_or(0);
    assert!((150..=350).contains(&busy), "busy host got {busy} of 1000");

    // Ten choices: the busy host is picked only when all ten land on it (1 in 1024).
    let b = Balancer::new(
        Some(&lb(LbAlgorithm::LeastRequest {
            choice_count: Some(10),
            slow_start: None,
        })),
        members(&hs),
        None,
    );
    let counts = spread(&b, 1000);
    assert!(counts.get(&8001).copied().unwrap_or(0) <= 5, "{counts:?}");
}

#[test]
fn random_reaches_every_host() {
    let hs = hosts(3);
    let b = Balancer::new(Some(&lb(LbAlgorithm::Random)), members(&hs), None);
    let counts = spread(&b, 3000);
    for port in 8001..=8003 {
        let n = counts[&port];
        assert!((800..=1200).contains(&n), "{counts:?}");
    }
}

#[test]
fn ring_hash_sizes_the_ring_as_envoy() {
    let addresses: Vec<SocketAddr> = hosts(3).iter().map(|h| h.address).collect();
    // ceil(1024 / 3) = 342 entries each.
    assert_eq!(ring_hash::Ring::build(&addresses, 1024, 8 << 20).len(), 1026);
    assert_eq!(ring_hash::Ring::build(&addresses, 3000, 8 << 20).len(), 3000);
    assert_eq!(ring_hash::Ring::build(&addresses, 1024, 600).len(), 600);
}

#[test]
fn ring_hash_keeps_a_key_on_one_host_and_spreads_keys() {
    let hs = hosts(3);
    let b = Balancer::new(Some(&ring(vec![header_policy("x-user")])), members(&hs), None);
    let stats = ClusterStats::default();
    let mut per_host: HashMap<u16, usize> = HashMap::new();
    for key in 0..1000 {
        let headers = Headers(vec![("x-user", format!("user-{key}"))]);
        let first = pick_port(&b, &headers, &stats).unwrap();
        for _ in 0..3 {
            assert_eq!(pick_port(&b, &headers, &stats), Some(first));
        }
        *per_host.entry(first).or_default() += 1;
    }
    println!("ring hash, 1000 keys over 3 hosts: {per_host:?}");
    for port in 8001..=8003 {
        assert!((200..=470).contains(&per_host[&port]), "{per_host:?}");
    }
}

#[test]
fn ring_hash_moves_few_keys_of_the_hosts_that_stay() {
    let hs = hosts(3);
    let policy = ring(vec![header_policy("x-user")]);
    let before = Balancer::new(Some(&policy), members(&hs), None);
    let after = Balancer::new(Some(&policy), members(&hs[..2]), None);
    let stats = ClusterStats::default();
    let (mut kept, mut moved) = (0, 0);
    for key in 0..1000 {
        let headers = Headers(vec![("x-user", format!("k{key}"))]);
        let was = pick_port(&before, &headers, &stats).unwrap();
        if was != 8003 {
            kept += 1;
            if pick_port(&after, &headers, &stats) != Some(was) {
                moved += 1;
            }
        }
    }
    // With Envoy's sizing the two hosts left get more entries each (512, not 342), which takes
    // a few keys from each other: few, not none.
    println!("ring hash, a host left: {moved} of {kept} keys of the other hosts moved");
    assert!(moved * 5 < kept, "{moved} of {kept} moved");
}

#[test]
fn ring_hash_skips_an_unhealthy_owner_and_returns_to_it() {
    let hs = hosts(3);
    let b = Balancer::new(Some(&ring(vec![header_policy("x-user")])), members(&hs), None);
    let stats = ClusterStats::default();
    let headers = Headers(vec![("x-user", "alice".into())]);
    let owner = pick_port(&b, &headers, &stats).unwrap();
    let owner_host = hs.iter().find(|h| h.address.port() == owner).unwrap();
    owner_host.healthy.store(false, Ordering::Relaxed);
    let other = pick_port(&b, &headers, &stats).unwrap();
    assert_ne!(other, owner);
    assert_eq!(pick_port(&b, &headers, &stats), Some(other), "still consistent");
    owner_host.healthy.store(true, Ordering::Relaxed);
    assert_eq!(pick_port(&b, &headers, &stats), Some(owner));
}

#[test]
fn hashing_over_an_unhealthy_host_is_hashing_without_it() {
    // Envoy builds the ring or table over the healthy hosts only.
    let maglev = lb(LbAlgorithm::Maglev {
        hash_policies: vec![header_policy("x-user")],
        use_hostname_for_hashing: false,
    });
    for policy in [ring(vec![header_policy("x-user")]), maglev] {
        let hs = hosts(3);
        let b = Balancer::new(Some(&policy), members(&hs), None);
        let without = Balancer::new(Some(&policy), members(&[hs[0].clone(), hs[2].clone()]), None);
        hs[1].healthy.store(false, Ordering::Relaxed);
        let stats = ClusterStats::default();
        for key in 0..300 {
            let headers = Headers(vec![("x-user", format!("k{key}"))]);
            assert_eq!(
                pick_port(&b, &headers, &stats),
                pick_port(&without, &headers, &stats)
            );
        }
        // Healthy again: the table over every host.
        hs[1].healthy.store(true, Ordering::Relaxed);
        let all = Balancer::new(Some(&policy), members(&hs), None);
        for key in 0..300 {
            let headers = Headers(vec![("x-user", format!("k{key}"))]);
            assert_eq!(pick_port(&b, &headers, &stats), pick_port(&all, &headers, &stats));
        }
    }
}

#[test]
fn ring_hash_without_a_hash_picks_at_random() {
    let hs = hosts(3);
    let b = Balancer::new(Some(&ring(vec![header_policy("x-user")])), members(&hs), None);
    let counts = spread(&b, 900);
    assert_eq!(counts.len(), 3, "{counts:?}");
}

#[test]
fn maglev_fills_its_table_evenly_and_is_consistent() {
    let hs = hosts(3);
    let addresses: Vec<SocketAddr> = hs.iter().map(|h| h.address).collect();
    let table = maglev::Table::build(&addresses);
    assert_eq!(table.entries().len() as u64, maglev::TABLE_SIZE);
    for i in 0..3u32 {
        let n = table.entries().iter().filter(|&&e| e == i).count();
        assert!((21845..=21846).contains(&n), "host {i} has {n} entries");
    }
    let policy = lb(LbAlgorithm::Maglev {
        hash_policies: vec![header_policy("x-user")],
        use_hostname_for_hashing: false,
    });
    let b = Balancer::new(Some(&policy), members(&hs), None);
    // Endpoint order does not matter: the table is built in address order.
    let mut reversed = hs.clone();
    reversed.reverse();
    let b2 = Balancer::new(Some(&policy), members(&reversed), None);
    let fewer = Balancer::new(Some(&policy), members(&hs[..2]), None);
    let stats = ClusterStats::default();
    let mut per_host: HashMap<u16, usize> = HashMap::new();
    let mut moved = 0;
    for key in 0..1000 {
        let headers = Headers(vec![("x-user", format!("user-{key}"))]);
        let first = pick_port(&b, &headers, &stats).unwrap();
        assert_eq!(pick_port(&b, &headers, &stats), Some(first));
        assert_eq!(pick_port(&b2, &headers, &stats), Some(first));
        if first != 8003 && pick_port(&fewer, &headers, &stats) != Some(first) {
            moved += 1;
        }
        *per_host.entry(first).or_default() += 1;
    }
    println!("maglev, 1000 keys over 3 hosts: {per_host:?}; kept keys moved when a host left: {moved}");
    assert_eq!(per_host.len(), 3);
    // Maglev's disruption is small, not zero.
    assert!(moved < 100, "{moved} keys moved");
}

#[test]
fn hash_policies_combine_and_terminal_stops() {
    let header_a = header_policy("a");
    let header_b = header_policy("b");
    let headers = Headers(vec![("a", "1".into()), ("b", "2".into())]);
    let mut context = PickContext::new(&headers, client());
    let only_a = hash_policy::request_hash(std::slice::from_ref(&header_a), &mut context).unwrap();
    let only_b = hash_policy::request_hash(std::slice::from_ref(&header_b), &mut context).unwrap();
    let both = hash_policy::request_hash(&[header_a.clone(), header_b.clone()], &mut context).unwrap();
    assert_eq!(both, only_a.rotate_left(1) ^ only_b);
    let terminal_a = HashPolicy {
        terminal: true,
        ..header_a.clone()
    };
    assert_eq!(
        hash_policy::request_hash(&[terminal_a.clone(), header_b.clone()], &mut context),
        Some(only_a)
    );
    // A terminal policy that produced nothing does not stop the list.
    let missing_terminal = HashPolicy {
        source: HashSource::Header("missing".into()),
        terminal: true,
    };
    assert_eq!(
        hash_policy::request_hash(&[missing_terminal, header_b], &mut context),
        Some(only_b)
    );
    assert_eq!(
        hash_policy::request_hash(&[header_policy("missing")], &mut context),
        None
    );
}

#[test]
fn a_header_hash_ignores_the_order_of_its_values() {
    let p = [header_policy("x")];
    let one = Headers(vec![("x", "a".into()), ("x", "b".into())]);
    let two = Headers(vec![("x", "b".into()), ("x", "a".into())]);
    assert_eq!(
        hash_policy::request_hash(&p, &mut PickContext::new(&one, client())),
        hash_policy::request_hash(&p, &mut PickContext::new(&two, client())),
    );
}

#[test]
fn source_ip_hash_ignores_the_port() {
    let p = [HashPolicy {
        source: HashSource::SourceIp,
        terminal: false,
    }];
    let h = no_headers();
    let a = hash_policy::request_hash(&p, &mut PickContext::new(&h, "10.1.1.1:1000".parse().unwrap()));
    let b = hash_policy::request_hash(&p, &mut PickContext::new(&h, "10.1.1.1:2000".parse().unwrap()));
    let c = hash_policy::request_hash(&p, &mut PickContext::new(&h, "10.1.1.2:1000".parse().unwrap()));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

fn cookie_policy(ttl: Option<Duration>) -> HashPolicy {
    HashPolicy {
        source: HashSource::Cookie(CookieHash {
            name: "session-id".into(),
            path: Some("/api".into()),
            ttl,
            http_only: true,
            secure: true,
            same_site: Some("Strict".into()),
        }),
        terminal: false,
    }
}

#[test]
fn a_cookie_with_a_ttl_is_generated_once_and_then_hashed() {
    let p = [cookie_policy(Some(Duration::from_secs(1800)))];
    let h = no_headers();
    let mut context = PickContext::new(&h, client());
    let generated = hash_policy::request_hash(&p, &mut context).unwrap();
    assert_eq!(context.set_cookies.len(), 1);
    let set_cookie = &context.set_cookies[0];
    let value = set_cookie
        .strip_prefix("session-id=\"")
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(value.len(), 16, "{set_cookie}");
    assert_eq!(
        set_cookie,
        &format!("session-id=\"{value}\"; Max-Age=1800; Path=/api; HttpOnly; Secure; SameSite=Strict")
    );
    // The client sends it back (quoted, as set, or not): same hash, no new cookie.
    for sent in [
        format!("other=1; session-id=\"{value}\""),
        format!("session-id={value}"),
    ] {
        let h = Headers(vec![("cookie", sent)]);
        let mut context = PickContext::new(&h, client());
        assert_eq!(hash_policy::request_hash(&p, &mut context), Some(generated));
        assert!(context.set_cookies.is_empty());
    }
    // Another connection gets another cookie.
    let mut other = PickContext::new(&h, "10.0.0.7:40001".parse().unwrap());
    assert_ne!(hash_policy::request_hash(&p, &mut other), Some(generated));
}

#[test]
fn a_cookie_without_a_ttl_is_never_generated() {
    let p = [cookie_policy(None)];
    let h = no_headers();
    let mut context = PickContext::new(&h, client());
    assert_eq!(hash_policy::request_hash(&p, &mut context), None);
    assert!(context.set_cookies.is_empty());
    let h = Headers(vec![("Cookie", "session-id=abc".into())]);
    assert!(hash_policy::request_hash(&p, &mut PickContext::new(&h, client())).is_some());
}

#[test]
fn slow_start_gives_a_new_host_its_minimum_weight_first() {
    let hs = hosts(2);
    let now = Instant::now();
    let members = vec![
        Member {
            host: hs[0].clone(),
            added: None,
        },
        Member {
            host: hs[1].clone(),
            added: Some(now),
        },
    ];
    let policy = lb(LbAlgorithm::RoundRobin {
        slow_start: Some(SlowStart {
            window: Duration::from_secs(60),
            aggression: None,
            min_weight_percent: Some(10),
        }),
    });
    let b = Balancer::new(Some(&policy), members, None);
    // Just added: weight max(0.1, ~0) = 0.1 against 1: about 9%.
    let new = spread(&b, 2000).get(&8002).copied().unwrap_or(0);
    assert!((80..=300).contains(&new), "new host got {new} of 2000");
    // The formula: (t / window)^(1 / aggression), at least min weight.
    let half = now + Duration::from_secs(30);
    assert!((b.slow_start_weight(1, half) - 0.5).abs() < 1e-6);
    assert_eq!(b.slow_start_weight(1, now + Duration::from_secs(1)), 0.1);
    assert_eq!(b.slow_start_weight(1, now + Duration::from_secs(61)), 1.0);
    assert_eq!(
        b.slow_start_weight(0, now),
        1.0,
        "hosts there from the start are not slowed"
    );

    let policy = lb(LbAlgorithm::RoundRobin {
        slow_start: Some(SlowStart {
            window: Duration::from_secs(100),
            aggression: Some((2.0, "key".into())),
            min_weight_percent: None,
        }),
    });
    let members = vec![Member {
        host: hs[1].clone(),
        added: Some(now),
    }];
    let b = Balancer::new(Some(&policy), members, None);
    assert!((b.slow_start_weight(0, now + Duration::from_secs(25)) - 0.5).abs() < 1e-6);
}

#[test]
fn localities_weigh_as_many_as_their_hosts() {
    let hs = vec![
        host(8001, Some("zone-a")),
        host(8002, Some("zone-b")),
        host(8003, Some("zone-b")),
        host(8004, Some("zone-b")),
    ];
    // kgateway's default (no loadBalancer): locality weighted round robin.
    let b = Balancer::new(None, members(&hs), None);
    let counts = spread(&b, 4000);
    assert!(
        (800..=1200).contains(&counts[&8001]),
        "one host of four: {counts:?}"
    );
    // A locality that lost hosts weighs less (Envoy's overprovisioning factor 1.4: 2 of 3
    // healthy still weighs 3 x min(1, 1.4 x 2/3) = 2.8).
    hs[1].healthy.store(false, Ordering::Relaxed);
    let b = Balancer::new(None, members(&hs), None);
    let counts = spread(&b, 3800);
    assert!((800..=1200).contains(&counts[&8001]), "1 of 3.8: {counts:?}");
    hs[1].healthy.store(true, Ordering::Relaxed);
    // A ring hash ignores localities.
    let b = Balancer::new(Some(&ring(Vec::new())), members(&hs), None);
    let counts = spread(&b, 4000);
    assert!(counts[&8001] < 1500, "{counts:?}");
    // A zone losing its host loses its weight.
    hs[0].healthy.store(false, Ordering::Relaxed);
    let b = Balancer::new(None, members(&hs), None);
    assert!(!spread(&b, 200).contains_key(&8001));
}

fn zone_aware(routing_enabled: u32, min_cluster_size: u64, force: Option<u32>) -> LoadBalancer {
    LoadBalancer {
        algorithm: Some(LbAlgorithm::RoundRobin { slow_start: None }),
        zone_aware: Some(ZoneAware {
            routing_enabled,
            min_cluster_size,
            force_local_zone_min_size: force,
        }),
        ..LoadBalancer::default()
    }
}

fn zoned() -> Vec<Arc<TestHost>> {
    vec![
        host(8001, Some("zone-a")),
        host(8002, Some("zone-b")),
        host(8003, Some("zone-b")),
    ]
}

#[test]
fn zone_aware_routing_stays_in_the_local_zone() {
    let hs = zoned();
    let b = Balancer::new(Some(&zone_aware(100, 3, None)), members(&hs), Some("zone-a"));
    let stats = ClusterStats::default();
    for _ in 0..10 {
        assert_eq!(pick_port(&b, &no_headers(), &stats), Some(8001));
    }
    assert_eq!(stats.lb_zone_routing_all_directly.load(Ordering::Relaxed), 10);

    // Without the proxy's zone, no zone-aware routing.
    let b = Balancer::new(Some(&zone_aware(100, 3, None)), members(&hs), None);
    assert_eq!(spread(&b, 300).len(), 3);

    // Every endpoint in one zone: nothing to prefer, plain round robin.
    let one_zone = vec![host(8001, Some("zone-a")), host(8002, Some("zone-a"))];
    let b = Balancer::new(
        Some(&zone_aware(100, 1, None)),
        members(&one_zone),
        Some("zone-a"),
    );
    let stats = ClusterStats::default();
    assert_eq!(pick_port(&b, &no_headers(), &stats), Some(8001));
    assert_eq!(pick_port(&b, &no_headers(), &stats), Some(8002));
    assert_eq!(stats.lb_zone_routing_all_directly.load(Ordering::Relaxed), 0);

    // routing_enabled 0: never.
    let b = Balancer::new(Some(&zone_aware(0, 3, None)), members(&hs), Some("zone-a"));
    assert_eq!(spread(&b, 300).len(), 3);

    // routing_enabled 50: about half local, the rest over every host.
    let b = Balancer::new(Some(&zone_aware(50, 3, None)), members(&hs), Some("zone-a"));
    let local = spread(&b, 3000)[&8001];
    assert!((1700..=2300).contains(&local), "{local} of 3000 local");
}

#[test]
fn zone_aware_routing_needs_a_big_enough_cluster_and_a_healthy_local_host() {
    let hs = zoned();
    let b = Balancer::new(Some(&zone_aware(100, 6, None)), members(&hs), Some("zone-a"));
    let stats = ClusterStats::default();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        seen.insert(pick_port(&b, &no_headers(), &stats).unwrap());
    }
    assert_eq!(seen.len(), 3, "3 hosts < min_cluster_size 6: every zone");
    assert_eq!(
        stats.lb_zone_cluster_too_small.load(Ordering::Relaxed),
        1,
        "counted once"
    );

    // force_local_zone with enough local hosts overrides the size.
    let b = Balancer::new(Some(&zone_aware(100, 6, Some(1))), members(&hs), Some("zone-a"));
    assert_eq!(spread(&b, 30).len(), 1);

    // The local host is unhealthy: cross zone.
    hs[0].healthy.store(false, Ordering::Relaxed);
    let b = Balancer::new(Some(&zone_aware(100, 2, Some(1))), members(&hs), Some("zone-a"));
    let stats = ClusterStats::default();
    for _ in 0..10 {
        assert_ne!(pick_port(&b, &no_headers(), &stats), Some(8001));
    }
    assert_eq!(stats.lb_zone_routing_cross_zone.load(Ordering::Relaxed), 10);
}

#[test]
fn a_health_change_never_builds_a_ring_on_the_request_path() {
    // As kgw runs: picks on a tokio worker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let hs = hosts(3);
    let policy = lb(LbAlgorithm::RingHash {
        minimum_ring_size: Some(1 << 20),
        maximum_ring_size: None,
        hash_policies: vec![header_policy("x-user")],
        use_hostname_for_hashing: false,
    });
    let t = Instant::now();
    let b = Balancer::new(Some(&policy), members(&hs), None);
    let build = t.elapsed();
    let stats = ClusterStats::default();
    let on = |key: usize| Headers(vec![("x-user", format!("k{key}"))]);
    let key = (0..)
        .find(|&k| pick_port(&b, &on(k), &stats) == Some(8002))
        .unwrap();

    hs[1].healthy.store(false, Ordering::Relaxed);
    b.health_changed();
    let t = Instant::now();
    pick_port(&b, &on(key), &stats).unwrap();
    let first_pick = t.elapsed();
    println!("ring of 1M entries built in {build:?}; first pick after the change: {first_pick:?}");
    assert!(
        first_pick * 20 < build,
        "the pick waited for a build: {first_pick:?} (a build takes {build:?})"
    );
    // The table over the healthy hosts comes in without another pick's help.
    let deadline = Instant::now() + build * 10 + Duration::from_secs(5);
    while healthy_table_missing(&b) {
        assert!(Instant::now() < deadline, "no rebuild within {:?}", build * 10);
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..20 {
        assert_ne!(pick_port(&b, &on(key), &stats), Some(8002));
    }
}

/// The ring over the healthy hosts is not in yet.
fn healthy_table_missing(b: &Balancer<TestHost>) -> bool {
    match &b.algorithm {
        Algorithm::Hashing(h) => h.over_healthy.current.load().is_none(),
        _ => true,
    }
}

/// A DNS cluster's host resolved from `name` to 127.0.0.`last`:`port`.
fn named_host(name: &str, last: u8, port: u16) -> Arc<TestHost> {
    Arc::new(TestHost {
        address: SocketAddr::from(([127, 0, 0, last], port)),
        zone: None,
        hostname: Some(name.to_string()),
        healthy: AtomicBool::new(true),
        active: AtomicU64::new(0),
    })
}

#[test]
fn use_hostname_for_hashing_keeps_a_names_keys_when_its_address_changes() {
    for by_hostname in [true, false] {
        let policies = [
            lb(LbAlgorithm::RingHash {
                minimum_ring_size: None,
                maximum_ring_size: None,
                hash_policies: vec![header_policy("x-user")],
                use_hostname_for_hashing: by_hostname,
            }),
            lb(LbAlgorithm::Maglev {
                hash_policies: vec![header_policy("x-user")],
                use_hostname_for_hashing: by_hostname,
            }),
        ];
        for policy in policies {
            let before = [
                named_host("a.test", 1, 80),
                named_host("b.test", 2, 80),
                named_host("c.test", 3, 80),
            ];
            // a.test moved to another address; b and c stayed.
            let after = [
                named_host("a.test", 9, 80),
                named_host("b.test", 2, 80),
                named_host("c.test", 3, 80),
            ];
            let b1 = Balancer::new(Some(&policy), members(&before), None);
            let b2 = Balancer::new(Some(&policy), members(&after), None);
            let stats = ClusterStats::default();
            let name_of = |b: &Balancer<TestHost>, key: usize| {
                let headers = Headers(vec![("x-user", format!("k{key}"))]);
                let mut context = PickContext::new(&headers, client());
                b.pick(&mut context, &stats).unwrap().hostname.clone().unwrap()
            };
            let moved = (0..500).filter(|&k| name_of(&b1, k) != name_of(&b2, k)).count();
            if by_hostname {
                assert_eq!(moved, 0, "keys follow the name, not the address");
            } else {
                assert!(moved > 0, "hashed by address, a new address moves keys");
            }
        }
    }
}
