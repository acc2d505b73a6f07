//! healthCheck, with `http` or `grpc` probes (the API admits exactly one of them).

use api::backend_config_policy::BackendConfigPolicySpec;
use snapshot::{GrpcHealthCheck, HealthCheck, HttpHealthCheck};

use super::{count, duration};

pub(super) fn health_check(spec: &BackendConfigPolicySpec) -> Option<HealthCheck> {
    let h = spec.health_check.as_ref()?;
    let (http, grpc) = match (&h.http, &h.grpc) {
        (Some(http), _) => (
            HttpHealthCheck {
                host: http.host.clone(),
                path: http.path.clone(),
                method: http.method.clone(),
            },
            None,
        ),
        (None, Some(grpc)) => (
            HttpHealthCheck::default(),
            Some(GrpcHealthCheck {
                service_name: grpc.service_name.clone().filter(|s| !s.is_empty()),
                authority: grpc.authority.clone().filter(|a| !a.is_empty()),
            }),
        ),
        (None, None) => return None,
    };
    Some(HealthCheck {
        timeout: duration(Some(&h.timeout))?,
        interval: duration(Some(&h.interval))?,
        unhealthy_threshold: count(Some(h.unhealthy_threshold))?,
        healthy_threshold: count(Some(h.healthy_threshold))?,
        http,
        grpc,
    })
}
