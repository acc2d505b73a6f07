//! Load balancing: the algorithm that picks an endpoint, its hash policies, slow start,
//! zone-aware routing and the common settings (panic threshold, merge window).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::put_duration;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadBalancer {
    /// None: round robin, Envoy's default.
    pub algorithm: Option<LbAlgorithm>,
    /// Below this percentage of healthy hosts, every host is picked as if healthy (Envoy: 50).
    pub healthy_panic_threshold: Option<u32>,
    /// Endpoint updates within this window are applied together (Envoy: 1 s).
    pub update_merge_window: Option<Duration>,
    /// Close every connection of the cluster when its set of hosts changes.
    pub close_connections_on_host_set_change: bool,
    /// `localityType: WeightedLb`: pick a locality by weight first, then a host in it.
    pub locality_weighted: bool,
    pub zone_aware: Option<ZoneAware>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LbAlgorithm {
    RoundRobin {
        slow_start: Option<SlowStart>,
    },
    LeastRequest {
        /// Hosts sampled per pick (Envoy: 2).
        choice_count: Option<u32>,
        slow_start: Option<SlowStart>,
    },
    Random,
    RingHash {
        minimum_ring_size: Option<u64>,
        maximum_ring_size: Option<u64>,
        hash_policies: Vec<HashPolicy>,
        /// Hash hosts by hostname, not address. Only DNS clusters have hostnames: on a
        /// Service's (EDS) cluster it changes nothing and renders as an empty
        /// `consistent_hashing_lb_config`, as kgateway does.
        use_hostname_for_hashing: bool,
    },
    Maglev {
        hash_policies: Vec<HashPolicy>,
        use_hostname_for_hashing: bool,
    },
}

impl LbAlgorithm {
    pub fn hash_policies(&self) -> &[HashPolicy] {
        match self {
            LbAlgorithm::RingHash { hash_policies, .. } | LbAlgorithm::Maglev { hash_policies, .. } => {
                hash_policies
            }
            _ => &[],
        }
    }
}

/// A new host's weight grows over `window` (Envoy's slow_start_config).
#[derive(Debug, Clone, PartialEq)]
pub struct SlowStart {
    pub window: Duration,
    /// The curve's exponent (Envoy: 1.0, linear), and the runtime key kgateway names it by.
    pub aggression: Option<(f64, String)>,
    /// The weight a new host starts at, in percent (Envoy: 10).
    pub min_weight_percent: Option<u32>,
}

/// Prefer endpoints in the proxy's own zone (Envoy's zone_aware_lb_config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneAware {
    /// Percentage of requests zone-aware routing applies to.
    pub routing_enabled: u32,
    /// Below this many endpoints in the cluster, no zone-aware routing.
    pub min_cluster_size: u64,
    /// Send only to the local zone while it has at least this many healthy endpoints.
    pub force_local_zone_min_size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPolicy {
    pub source: HashSource,
    /// Stop at this policy when it produced a hash.
    pub terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashSource {
    Header(String),
    Cookie(CookieHash),
    SourceIp,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CookieHash {
    pub name: String,
    pub path: Option<String>,
    /// With a ttl, a client without the cookie gets one generated (Set-Cookie on the answer).
    pub ttl: Option<Duration>,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<String>,
}

const POLICIES: &str = "envoy.load_balancing_policies";
const POLICY_TYPES: &str = "type.googleapis.com/envoy.extensions.load_balancing_policies";

/// `use_hostname_for_hashing` has an effect only where hosts have names; elsewhere kgateway
/// renders the config empty.
fn hostname_hashing(has_hostnames: bool) -> Value {
    if has_hostnames {
        json!({ "use_hostname_for_hashing": true })
    } else {
        json!({})
    }
}

pub(super) fn render(
    lb: Option<&LoadBalancer>,
    cluster: &mut Map<String, Value>,
    discovery: &crate::Discovery,
) {
    // What kgateway sets on every cluster of a Service (not on a Backend's).
    let kgateway_defaults = *discovery == crate::Discovery::Eds;
    let has_hostnames = matches!(discovery, crate::Discovery::Dns { .. });
    if kgateway_defaults {
        cluster.insert("ignore_health_on_host_removal".into(), true.into());
    }
    let Some(lb) = lb else {
        if !kgateway_defaults {
            return;
        }
        cluster.insert(
            "common_lb_config".into(),
            json!({"locality_weighted_lb_config": {}}),
        );
        return;
    };
    let mut common = Map::new();
    if let Some(p) = lb.healthy_panic_threshold {
        common.insert("healthy_panic_threshold".into(), json!({ "value": p }));
    }
    put_duration(&mut common, "update_merge_window", lb.update_merge_window);
    if lb.close_connections_on_host_set_change {
        common.insert("close_connections_on_host_set_change".into(), true.into());
    }
    if lb.algorithm.is_none() && lb.locality_weighted {
        common.insert("locality_weighted_lb_config".into(), json!({}));
    }
    cluster.insert("common_lb_config".into(), Value::Object(common));
    let Some(algorithm) = &lb.algorithm else {
        return;
    };
    let locality = || match &lb.zone_aware {
        Some(z) => {
            let mut m = Map::new();
            m.insert("routing_enabled".into(), json!({ "value": z.routing_enabled }));
            m.insert("min_cluster_size".into(), z.min_cluster_size.to_string().into());
            if let Some(n) = z.force_local_zone_min_size {
                m.insert("force_local_zone".into(), json!({ "min_size": n }));
            }
            json!({ "zone_aware_lb_config": m })
        }
        None => json!({"locality_weighted_lb_config": {}}),
    };
    let (name, type_name, mut config) = match algorithm {
        LbAlgorithm::RoundRobin { slow_start } => {
            let mut c = Map::new();
            c.insert("locality_lb_config".into(), locality());
            slow_start_into(&mut c, slow_start.as_ref());
            ("round_robin", "round_robin.v3.RoundRobin", c)
        }
        LbAlgorithm::LeastRequest {
            choice_count,
            slow_start,
        } => {
            let mut c = Map::new();
            super::put(&mut c, "choice_count", *choice_count);
            c.insert("locality_lb_config".into(), locality());
            slow_start_into(&mut c, slow_start.as_ref());
            ("least_request", "least_request.v3.LeastRequest", c)
        }
        LbAlgorithm::Random => {
            let mut c = Map::new();
            c.insert("locality_lb_config".into(), locality());
            ("random", "random.v3.Random", c)
        }
        LbAlgorithm::RingHash {
            minimum_ring_size,
            maximum_ring_size,
            use_hostname_for_hashing,
            ..
        } => {
            let mut c = Map::new();
            if *use_hostname_for_hashing {
                c.insert(
                    "consistent_hashing_lb_config".into(),
                    hostname_hashing(has_hostnames),
                );
            }
            if let Some(n) = minimum_ring_size {
                c.insert("minimum_ring_size".into(), n.to_string().into());
            }
            if let Some(n) = maximum_ring_size {
                c.insert("maximum_ring_size".into(), n.to_string().into());
            }
            ("ring_hash", "ring_hash.v3.RingHash", c)
        }
        LbAlgorithm::Maglev {
            use_hostname_for_hashing,
            ..
        } => {
            let mut c = Map::new();
            if *use_hostname_for_hashing {
                c.insert(
                    "consistent_hashing_lb_config".into(),
                    hostname_hashing(has_hostnames),
                );
            }
            ("maglev", "maglev.v3.Maglev", c)
        }
    };
    let mut typed = Map::new();
    typed.insert("@type".into(), format!("{POLICY_TYPES}.{type_name}").into());
    typed.append(&mut config);
    cluster.insert(
        "load_balancing_policy".into(),
        json!({"policies": [{"typed_extension_config": {"name": format!("{POLICIES}.{name}"), "typed_config": typed}}]}),
    );
}

fn slow_start_into(config: &mut Map<String, Value>, slow_start: Option<&SlowStart>) {
    let Some(s) = slow_start else { return };
    let mut m = Map::new();
    m.insert(
        "slow_start_window".into(),
        crate::format_duration(s.window).into(),
    );
    if let Some((value, key)) = &s.aggression {
        m.insert(
            "aggression".into(),
            json!({"default_value": value, "runtime_key": key}),
        );
    }
    if let Some(p) = s.min_weight_percent {
        m.insert("min_weight_percent".into(), json!({ "value": p }));
    }
    config.insert("slow_start_config".into(), Value::Object(m));
}

pub(super) fn route_hash_policy(lb: &LoadBalancer) -> Option<Value> {
    let policies = lb.algorithm.as_ref()?.hash_policies();
    if policies.is_empty() {
        return None;
    }
    let rendered: Vec<Value> = policies
        .iter()
        .map(|p| {
            let mut m = Map::new();
            match &p.source {
                HashSource::Header(name) => {
                    m.insert("header".into(), json!({ "header_name": name }));
                }
                HashSource::Cookie(c) => {
                    let mut cookie = Map::new();
                    cookie.insert("name".into(), c.name.clone().into());
                    put_duration(&mut cookie, "ttl", c.ttl);
                    super::put(&mut cookie, "path", c.path.clone());
                    let mut attributes = Vec::new();
                    if c.http_only {
                        attributes.push(json!({"name": "HttpOnly"}));
                    }
                    if c.secure {
                        attributes.push(json!({"name": "Secure"}));
                    }
                    if let Some(s) = &c.same_site {
                        attributes.push(json!({"name": "SameSite", "value": s}));
                    }
                    if !attributes.is_empty() {
                        cookie.insert("attributes".into(), Value::Array(attributes));
                    }
                    m.insert("cookie".into(), Value::Object(cookie));
                }
                HashSource::SourceIp => {
                    m.insert("connection_properties".into(), json!({"source_ip": true}));
                }
            }
            if p.terminal {
                m.insert("terminal".into(), true.into());
            }
            Value::Object(m)
        })
        .collect();
    Some(Value::Array(rendered))
}
