//! Outlier detection: endpoints that fail in a row are ejected for a while.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{put, put_duration};

/// Envoy's `outlier_detection`; None fields take Envoy's defaults (see the accessors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_local_origin_failure: Option<u32>,
    pub enforcing_consecutive_5xx: Option<u32>,
    pub enforcing_consecutive_local_origin_failure: Option<u32>,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    pub max_ejection_percent: Option<u32>,
    /// Count local-origin failures (connect errors, timeouts) apart from upstream 5xx.
    pub split_external_local_origin_errors: bool,
}

impl OutlierDetection {
    pub fn consecutive_5xx(&self) -> u32 {
        self.consecutive_5xx.unwrap_or(5)
    }
    pub fn consecutive_local_origin_failure(&self) -> u32 {
        self.consecutive_local_origin_failure.unwrap_or(5)
    }
    pub fn enforcing_consecutive_5xx(&self) -> u32 {
        self.enforcing_consecutive_5xx.unwrap_or(100)
    }
    pub fn enforcing_consecutive_local_origin_failure(&self) -> u32 {
        self.enforcing_consecutive_local_origin_failure.unwrap_or(100)
    }
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Duration::from_secs(10))
    }
    pub fn base_ejection_time(&self) -> Duration {
        self.base_ejection_time.unwrap_or(Duration::from_secs(30))
    }
    pub fn max_ejection_percent(&self) -> u32 {
        self.max_ejection_percent.unwrap_or(10)
    }
}

pub(super) fn render(o: &OutlierDetection, cluster: &mut Map<String, Value>) {
    let mut m = Map::new();
    put(&mut m, "consecutive_5xx", o.consecutive_5xx);
    put_duration(&mut m, "interval", o.interval);
    put_duration(&mut m, "base_ejection_time", o.base_ejection_time);
    put(&mut m, "max_ejection_percent", o.max_ejection_percent);
    put(&mut m, "enforcing_consecutive_5xx", o.enforcing_consecutive_5xx);
    if o.split_external_local_origin_errors {
        m.insert("split_external_local_origin_errors".into(), true.into());
    }
    put(
        &mut m,
        "consecutive_local_origin_failure",
        o.consecutive_local_origin_failure,
    );
    put(
        &mut m,
        "enforcing_consecutive_local_origin_failure",
        o.enforcing_consecutive_local_origin_failure,
    );
    cluster.insert("outlier_detection".into(), Value::Object(m));
}
