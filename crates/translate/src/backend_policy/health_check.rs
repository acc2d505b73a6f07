//! healthCheck with `http` (gRPC checks wait for the HTTP/2 issue and are refused by the API).

use api::backend_config_policy::BackendConfigPolicySpec;
use snapshot::{HealthCheck, HttpHealthCheck};

use super::{count, duration};

pub(super) fn health_check(spec: &BackendConfigPolicySpec) -> Option<HealthCheck> {
    let h = spec.health_check.as_ref()?;
    let http = h.http.as_ref()?;
    Some(HealthCheck {
        timeout: duration(Some(&h.timeout))?,
        interval: duration(Some(&h.interval))?,
        unhealthy_threshold: count(Some(h.unhealthy_threshold))?,
        healthy_threshold: count(Some(h.healthy_threshold))?,
        http: HttpHealthCheck {
            host: http.host.clone(),
            path: http.path.clone(),
            method: http.method.clone(),
        },
    })
}
