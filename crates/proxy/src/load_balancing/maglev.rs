//! Maglev (Envoy's table of 65537 entries): each host fills the table along its own
//! permutation (offset xxHash64(key, seed 0), skip xxHash64(key, seed 1); the key is the
//! address, or the hostname with useHostnameForHashing), in turns, until it is full; a request
//! goes to entry hash % size.

use xxhash_rust::xxh64::xxh64;

/// Envoy's default table size (a prime).
pub(super) const TABLE_SIZE: u64 = 65537;

pub(super) struct Table {
    /// Host index per entry; empty when there are no hosts.
    entries: Vec<u32>,
}

impl Table {
    pub(super) fn build<K: std::fmt::Display>(hosts: &[K]) -> Table {
        if hosts.is_empty() {
            return Table { entries: Vec::new() };
        }
        struct Build {
            offset: u64,
            skip: u64,
            next: u64,
        }
        let mut builds: Vec<Build> = hosts
            .iter()
            .map(|h| {
                let key = h.to_string();
                Build {
                    offset: xxh64(key.as_bytes(), 0) % TABLE_SIZE,
                    skip: xxh64(key.as_bytes(), 1) % (TABLE_SIZE - 1) + 1,
                    next: 0,
                }
            })
            .collect();
        const EMPTY: u32 = u32::MAX;
        let mut entries = vec![EMPTY; TABLE_SIZE as usize];
        let mut filled = 0u64;
        'fill: loop {
            for (index, b) in builds.iter_mut().enumerate() {
                let mut slot = (b.offset + b.skip * b.next) % TABLE_SIZE;
                while entries[slot as usize] != EMPTY {
                    b.next += 1;
                    slot = (b.offset + b.skip * b.next) % TABLE_SIZE;
                }
                entries[slot as usize] = index as u32;
                b.next += 1;
                filled += 1;
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Table { entries }
    }

    #[cfg(test)]
    pub(super) fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// The host owning `hash`; None when the table is empty.
    pub(super) fn owner(&self, hash: u64) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        Some(self.entries[(hash % self.entries.len() as u64) as usize])
    }
}
