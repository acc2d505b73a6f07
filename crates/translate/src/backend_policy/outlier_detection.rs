//! outlierDetection. The CRD's defaults (interval 10s, baseEjectionTime 30s, consecutive5xx 5,
//! maxEjectionPercent 10) are applied here, as the API server applies them in Kubernetes mode,
//! so a policy applied from a file renders and runs the same.

use std::time::Duration;

use api::backend_config_policy::BackendConfigPolicySpec;
use snapshot::OutlierDetection;

use super::{count, duration};

pub(super) fn outlier_detection(spec: &BackendConfigPolicySpec) -> Option<OutlierDetection> {
    spec.outlier_detection.as_ref().map(|o| OutlierDetection {
        consecutive_5xx: count(o.consecutive_5xx).or(Some(5)),
        consecutive_local_origin_failure: count(o.consecutive_local_origin_failure),
        enforcing_consecutive_5xx: count(o.enforcing_consecutive_5xx),
        enforcing_consecutive_local_origin_failure: count(o.enforcing_consecutive_local_origin_failure),
        interval: duration(o.interval.as_deref()).or(Some(Duration::from_secs(10))),
        base_ejection_time: duration(o.base_ejection_time.as_deref()).or(Some(Duration::from_secs(30))),
        max_ejection_percent: count(o.max_ejection_percent).or(Some(10)),
        split_external_local_origin_errors: o.split_external_local_origin_errors == Some(true),
    })
}
