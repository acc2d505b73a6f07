//! Load balancing: which of a route's weighted clusters a request goes to, and which endpoint of
//! that cluster.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Picks a cluster by weight (one target: no randomness needed).
pub(crate) fn pick_weighted(targets: &[snapshot::WeightedCluster]) -> &snapshot::WeightedCluster {
    if targets.len() == 1 {
        return &targets[0];
    }
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    let mut roll = fast_random() % total.max(1);
    for t in targets {
        if roll < u64::from(t.weight) {
            return t;
        }
        roll -= u64::from(t.weight);
    }
    &targets[targets.len() - 1]
}

/// A per-thread xorshift: weighted picks need spread, not cryptographic randomness.
fn fast_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// Round robin over a cluster's endpoints (Envoy's default policy).
#[derive(Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The next endpoint in turn; None when there are none.
    pub(crate) fn pick<'a, E>(&self, endpoints: &'a [E]) -> Option<&'a E> {
        if endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
        Some(&endpoints[i])
    }
}
