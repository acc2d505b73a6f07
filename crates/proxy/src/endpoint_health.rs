//! An endpoint's health as active health checking and outlier detection see it: the load
//! balancer skips an endpoint either marks (unless the cluster is in panic), and `/clusters`
//! shows the marks as Envoy's `health_flags`.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// Active health checks found it unhealthy (Envoy's `/failed_active_hc`).
    failed_active_hc: AtomicBool,
    /// Outlier detection ejected it (Envoy's `/failed_outlier_check`).
    ejected: AtomicBool,
}

impl EndpointHealth {
    /// A new endpoint's health: `/failed_active_hc` as given, not ejected.
    pub fn new(failed_active_hc: bool) -> EndpointHealth {
        EndpointHealth {
            failed_active_hc: AtomicBool::new(failed_active_hc),
            ejected: AtomicBool::new(false),
        }
    }

    pub fn is_healthy(&self) -> bool {
        !self.failed_active_hc.load(Ordering::Relaxed) && !self.ejected.load(Ordering::Relaxed)
    }

    pub fn set_failed_active_hc(&self, failed: bool) {
        self.failed_active_hc.store(failed, Ordering::Relaxed);
    }

    pub fn failed_active_hc(&self) -> bool {
        self.failed_active_hc.load(Ordering::Relaxed)
    }

    pub fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Ordering::Relaxed);
    }

    pub fn ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Envoy's `health_flags` text: `healthy`, or each failure as `/failed_active_hc`.
    pub fn flags(&self) -> String {
        let mut out = String::new();
        if self.failed_active_hc() {
            out.push_str("/failed_active_hc");
        }
        if self.ejected() {
            out.push_str("/failed_outlier_check");
        }
        if out.is_empty() {
            out.push_str("healthy");
        }
        out
    }
}
