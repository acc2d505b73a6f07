//! loadBalancer: the algorithm, its hash policies, slow start, zone awareness, common settings.

use api::ObjectKey;
use api::backend_config_policy::{
    BackendConfigPolicySpec, HashPolicy as ApiHashPolicy, SlowStart as ApiSlowStart,
};
use snapshot::{CookieHash, HashPolicy, HashSource, LbAlgorithm, LoadBalancer, SlowStart, ZoneAware};

use super::{count, duration};

/// The CRD's default `leastRequest.choiceCount` (applied here as the API server would).
const CHOICE_COUNT: u32 = 2;
/// Defaults of `zoneAware.preferLocal` (the CRD's).
const MIN_ENDPOINTS_THRESHOLD: u64 = 6;
const ROUTING_ENABLED: u32 = 100;
const MIN_ENDPOINTS_IN_ZONE: u32 = 1;

pub(super) fn load_balancer(spec: &BackendConfigPolicySpec, policy: &ObjectKey) -> Option<LoadBalancer> {
    let lb = spec.load_balancer.as_ref()?;
    let slow_start = |s: Option<&ApiSlowStart>| s.and_then(|s| slow_start(s, policy));
    let algorithm = if let Some(lr) = &lb.least_request {
        Some(LbAlgorithm::LeastRequest {
            choice_count: count(lr.choice_count).or(Some(CHOICE_COUNT)),
            slow_start: slow_start(lr.slow_start.as_ref()),
        })
    } else if let Some(rr) = &lb.round_robin {
        Some(LbAlgorithm::RoundRobin {
            slow_start: slow_start(rr.slow_start.as_ref()),
        })
    } else if let Some(rh) = &lb.ring_hash {
        Some(LbAlgorithm::RingHash {
            minimum_ring_size: rh.minimum_ring_size.and_then(|n| u64::try_from(n).ok()),
            maximum_ring_size: rh.maximum_ring_size.and_then(|n| u64::try_from(n).ok()),
            hash_policies: rh.hash_policies.iter().filter_map(hash_policy).collect(),
            use_hostname_for_hashing: rh.use_hostname_for_hashing == Some(true),
        })
    } else if let Some(m) = &lb.maglev {
        Some(LbAlgorithm::Maglev {
            hash_policies: m.hash_policies.iter().filter_map(hash_policy).collect(),
            use_hostname_for_hashing: m.use_hostname_for_hashing == Some(true),
        })
    } else {
        lb.random.as_ref().map(|_| LbAlgorithm::Random)
    };
    let zone_aware = lb
        .zone_aware
        .as_ref()
        .and_then(|z| z.prefer_local.as_ref())
        .map(|p| ZoneAware {
            routing_enabled: count(p.routing_enabled).unwrap_or(ROUTING_ENABLED),
            min_cluster_size: p
                .min_endpoints_threshold
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(MIN_ENDPOINTS_THRESHOLD),
            force_local_zone_min_size: p
                .force
                .as_ref()
                .map(|f| count(f.min_endpoints_in_zone_threshold).unwrap_or(MIN_ENDPOINTS_IN_ZONE)),
        });
    Some(LoadBalancer {
        algorithm,
        healthy_panic_threshold: count(lb.healthy_panic_threshold),
        update_merge_window: duration(lb.update_merge_window.as_deref()),
        close_connections_on_host_set_change: lb.close_connections_on_host_set_change == Some(true),
        locality_weighted: lb.locality_type.as_deref() == Some("WeightedLb"),
        zone_aware,
    })
}

/// kgateway names the aggression's runtime key after the policy: `<name>.<namespace>.slowStart.aggression`.
fn slow_start(s: &ApiSlowStart, policy: &ObjectKey) -> Option<SlowStart> {
    Some(SlowStart {
        window: duration(s.window.as_deref())?,
        aggression: s
            .aggression
            .as_deref()
            .and_then(|a| a.parse::<f64>().ok())
            .map(|a| {
                (
                    a,
                    format!("{}.{}.slowStart.aggression", policy.name, policy.namespace),
                )
            }),
        min_weight_percent: count(s.min_weight_percent),
    })
}

fn hash_policy(p: &ApiHashPolicy) -> Option<HashPolicy> {
    let source = if let Some(h) = &p.header {
        HashSource::Header(h.name.to_ascii_lowercase())
    } else if let Some(c) = &p.cookie {
        HashSource::Cookie(CookieHash {
            name: c.name.clone(),
            path: c.path.clone(),
            // A ttl of 0 is allowed: a session cookie is generated.
            ttl: c
                .ttl
                .as_deref()
                .and_then(api::duration::parse_go_duration)
                .and_then(|n| u64::try_from(n).ok())
                .map(std::time::Duration::from_nanos),
            http_only: c.http_only == Some(true),
            secure: c.secure == Some(true),
            same_site: c.same_site.clone(),
        })
    } else if p.source_ip.is_some() {
        HashSource::SourceIp
    } else {
        return None;
    };
    Some(HashPolicy {
        source,
        terminal: p.terminal == Some(true),
    })
}
