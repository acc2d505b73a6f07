//! upstreamProxyProtocol: V1 (the default) or V2.

use api::backend_config_policy::BackendConfigPolicySpec;
use snapshot::ProxyProtocolVersion;

pub(super) fn version(spec: &BackendConfigPolicySpec) -> Option<ProxyProtocolVersion> {
    spec.upstream_proxy_protocol
        .as_ref()
        .map(|p| match p.version.as_deref() {
            Some("V2") => ProxyProtocolVersion::V2,
            _ => ProxyProtocolVersion::V1,
        })
}
