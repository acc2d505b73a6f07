//! File descriptors: kgw raises its soft RLIMIT_NOFILE to the hard limit at start, caps client
//! connections below it, and keeps a reserve so that its own files (manifests, the state
//! directory, the access log), the admin API and upstream connects still get a descriptor when
//! clients hold all the others.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::{DataPlane, upstream};

/// The process's descriptor limit after raising it, with what it was before.
#[derive(Debug, Clone, Copy)]
pub struct FdLimit {
    pub before: u64,
    pub now: u64,
}

impl FdLimit {
    /// Descriptors kept out of the connections' reach: a tenth of the limit, at least 64 (the
    /// runtime, the admin API, watched files, Kubernetes watches) and at most 1024.
    pub fn reserve(&self) -> u64 {
        (self.now / 10).clamp(64, 1024).min(self.now / 2)
    }

    /// Descriptors client and upstream connections may use together.
    pub fn connection_budget(&self) -> u64 {
        self.now - self.reserve()
    }
}

/// Raises the soft limit on open files to the hard limit (as Envoy's and nginx's operators do
/// with `ulimit -n`; systemd's default soft limit is 1024 while its hard limit is 524288).
pub fn raise_fd_limit() -> FdLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // None is "unlimited", which the kernel never reports for RLIMIT_NOFILE; 1024 is its default.
    let before = limit.current.unwrap_or(1024);
    let mut target = limit.maximum.unwrap_or(u64::MAX);
    if let Some(nr_open) = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        // The kernel refuses a soft limit above fs.nr_open even when the hard limit is higher.
        target = target.min(nr_open);
    }
    if target <= before {
        return FdLimit { before, now: before };
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => FdLimit { before, now: target },
        Err(e) => {
            tracing::warn!(soft = before, hard = ?limit.maximum, "cannot raise the open files limit: {e}");
            FdLimit { before, now: before }
        }
    }
}

impl DataPlane {
    /// Whether one more client connection may be accepted: below the connection cap, and with
    /// client plus upstream descriptors below the budget. Pooled upstream connections outlive
    /// their clients (up to the upstream idle timeout), so they are always counted; both counts
    /// are single atomics, so the accept path stays cheap. At the budget, idle pooled
    /// connections are closed to make room, as they are the ones nobody is waiting on.
    pub(crate) fn admits_connection(&self) -> bool {
        let clients = self.downstream.downstream_cx_active.load(Ordering::Relaxed);
        let max = self.options.max_downstream_connections;
        let budget = self.options.connection_descriptor_budget;
        if admits(clients, upstream::descriptors_open(), max, budget) {
            return true;
        }
        if clients >= max {
            return false;
        }
        for cluster in self.runtime().clusters.iter() {
            cluster.expire_idle(Duration::ZERO);
        }
        admits(clients, upstream::descriptors_open(), max, budget)
    }
}

/// The admission rule: `clients` client connections (one descriptor each) and
/// `upstream_descriptors` held by upstream connections, against the connection cap and the
/// descriptor budget.
fn admits(clients: u64, upstream_descriptors: u64, max_clients: u64, budget: u64) -> bool {
    clients < max_clients && clients.saturating_add(upstream_descriptors) < budget
}

#[cfg(test)]
mod tests {
    use super::admits;

    #[test]
    fn pooled_upstream_connections_left_by_gone_clients_count_against_the_budget() {
        // 10 clients, and idle pooled upstream connections from an earlier burst holding all
        // but 10 of a 1000-descriptor budget: one more client would need a descriptor that is
        // not there (the old rule admitted it, as 10 * 2 < 1000).
        assert!(!admits(10, 990, u64::MAX, 1000));
        assert!(admits(10, 989, u64::MAX, 1000));
        assert!(admits(0, 0, u64::MAX, 1000));
        assert!(!admits(5, 0, 5, 1000));
    }
}
