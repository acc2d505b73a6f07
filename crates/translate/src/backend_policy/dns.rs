//! dns: how a DNS cluster (a Backend with a DNS name) refreshes its names.

use api::backend_config_policy::BackendConfigPolicySpec;
use snapshot::DnsSettings;

pub(super) fn dns(spec: &BackendConfigPolicySpec) -> Option<DnsSettings> {
    spec.dns.as_ref().map(|d| DnsSettings {
        refresh_rate: super::duration(d.refresh_rate.as_deref()),
        jitter: super::duration(d.jitter.as_deref()),
        respect_ttl: d.respect_ttl == Some(true),
    })
}
