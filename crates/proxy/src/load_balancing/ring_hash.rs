//! Ring hash (Envoy's ketama-style ring): each host is hashed onto the ring many times
//! (xxHash64 of "<address>_<i>", or "<hostname>_<i>" with useHostnameForHashing), and a
//! request goes to the first entry at or after its hash, wrapping around. Removing a host moves its keys and few others (the hosts left get more
//! entries each, as Envoy sizes the ring).

use xxhash_rust::xxh64::xxh64;

pub(super) struct Ring {
    /// (hash, host index), sorted by hash.
    entries: Vec<(u64, u32)>,
}

impl Ring {
    /// Envoy's sizing: every host gets the same whole number of entries, enough for the ring
    /// to reach `min_size`, capped at `max_size` (hosts weigh the same here).
    pub(super) fn build<K: std::fmt::Display>(hosts: &[K], min_size: u64, max_size: u64) -> Ring {
        if hosts.is_empty() {
            return Ring { entries: Vec::new() };
        }
        let n = hosts.len() as f64;
        let weight = 1.0 / n;
        let scale = ((weight * min_size as f64).ceil() / weight).min(max_size as f64);
        let size = scale.ceil() as usize;
        let mut entries = Vec::with_capacity(size);
        let mut current = 0.0;
        let mut target = 0.0;
        let mut key = String::new();
        for (index, host) in hosts.iter().enumerate() {
            target += scale * weight;
            let mut i = 0u64;
            while current < target {
                key.clear();
                use std::fmt::Write;
                let _ = write!(key, "{host}_{i}");
                entries.push((xxh64(key.as_bytes(), 0), index as u32));
                i += 1;
                current += 1.0;
            }
        }
        entries.sort_unstable();
        Ring { entries }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The host of the first entry at or after `hash`, wrapping around; None on an empty ring.
    pub(super) fn owner(&self, hash: u64) -> Option<u32> {
        let at = self.entries.partition_point(|(h, _)| *h < hash);
        self.entries
            .get(at)
            .or(self.entries.first())
            .map(|(_, host)| *host)
    }
}
