//! How the data plane resolves a DNS cluster's host names (a Backend with DNS names), from a
//! BackendConfigPolicy's `dns`. Only DNS clusters resolve names; on others the setting has no
//! effect and is not rendered, as kgateway does.

use std::time::Duration;

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsSettings {
    /// How often names are resolved again; None: Envoy's 5s.
    pub refresh_rate: Option<Duration>,
    /// Up to this much is added at random to each refresh, so that replicas spread their lookups.
    pub jitter: Option<Duration>,
    /// Refresh when the answer's TTL runs out instead of at `refresh_rate`.
    pub respect_ttl: bool,
}

/// Envoy's DNS refresh rate when none is set.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);

impl DnsSettings {
    pub fn refresh_rate(&self) -> Duration {
        self.refresh_rate.unwrap_or(DEFAULT_DNS_REFRESH)
    }

    /// Its fields of Envoy's `DnsCluster` typed config.
    pub(crate) fn render(&self, dns_cluster: &mut Map<String, Value>) {
        super::put_duration(dns_cluster, "dns_refresh_rate", self.refresh_rate);
        super::put_duration(dns_cluster, "dns_jitter", self.jitter);
        if self.respect_ttl {
            dns_cluster.insert("respect_dns_ttl".into(), true.into());
        }
    }
}
