//! An endpoint's idle connections, generic over the connection: the pool keeps them, hands out
//! the most recently used one, and drops the ended and the expired; it knows nothing of
//! clusters or counters (its caller counts what leaves it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the pool needs to know of a connection.
pub(crate) trait Pooled {
    /// Has it ended while idle (the peer closed it, say)? Checked without blocking; the
    /// connection keeps the reason for itself.
    fn ended_while_idle(&mut self) -> bool;
    /// When it went back to the pool.
    fn idle_since(&self) -> Instant;
}

pub(crate) struct Pool<C> {
    idle: Mutex<Idle<C>>,
}

struct Idle<C> {
    /// Most recently used last.
    connections: Vec<C>,
    /// The endpoint is gone: nothing is pooled any more.
    closed: bool,
}

/// What `Pool::take` found.
pub(crate) struct Taken<C> {
    pub connection: Option<C>,
    /// How many connections left the pool: the one taken, and the ended ones found on the way
    /// (dropped).
    pub left: usize,
}

impl<C: Pooled> Pool<C> {
    pub(crate) fn new() -> Pool<C> {
        Pool {
            idle: Mutex::new(Idle {
                connections: Vec::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle<C>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that is still open, if any (so that the others
    /// can reach their idle timeout).
    #[cfg(test)]
    pub(crate) fn take(&self) -> Taken<C> {
        self.take_matching(|_| true)
    }

    /// As `take`, among the connections `usable` accepts (a PROXY protocol connection is one
    /// client's); the others stay.
    pub(crate) fn take_matching(&self, usable: impl Fn(&C) -> bool) -> Taken<C> {
        let mut idle = self.lock();
        let mut left = 0;
        let mut at = idle.connections.len();
        while at > 0 {
            at -= 1;
            if !usable(&idle.connections[at]) {
                continue;
            }
            let mut connection = idle.connections.remove(at);
            left += 1;
            if !connection.ended_while_idle() {
                return Taken {
                    connection: Some(connection),
                    left,
                };
            }
        }
        Taken {
            connection: None,
            left,
        }
    }

    /// Pools a connection; a closed pool gives it back.
    #[cfg(test)]
    pub(crate) fn put(&self, connection: C) -> Result<(), C> {
        self.put_unless(connection, |_| false)
    }

    /// Pools a connection unless `refuse` says no; a closed pool or a refusal gives it back.
    /// `refuse` runs under the pool's lock: whoever changes what it reads and then empties the
    /// pool (taking the lock) either is seen by it or finds the connection pooled.
    pub(crate) fn put_unless(&self, connection: C, refuse: impl FnOnce(&C) -> bool) -> Result<(), C> {
        let mut idle = self.lock();
        if idle.closed || refuse(&connection) {
            return Err(connection);
        }
        idle.connections.push(connection);
        Ok(())
    }

    /// Drops the connections that ended while idle; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let mut idle = self.lock();
        let before = idle.connections.len();
        idle.connections.retain_mut(|c| !c.ended_while_idle());
        before - idle.connections.len()
    }

    /// Takes out the connections idle for `max_idle` or longer.
    pub(crate) fn expire(&self, max_idle: Duration) -> Vec<C> {
        let mut idle = self.lock();
        let (expired, fresh) = std::mem::take(&mut idle.connections)
            .into_iter()
            .partition(|c| c.idle_since().elapsed() >= max_idle);
        idle.connections = fresh;
        expired
    }

    /// Takes out every connection; none is pooled after this.
    pub(crate) fn close(&self) -> Vec<C> {
        let mut idle = self.lock();
        idle.closed = true;
        std::mem::take(&mut idle.connections)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        id: u32,
        ended: bool,
        idle_since: Instant,
    }

    impl Pooled for Fake {
        fn ended_while_idle(&mut self) -> bool {
            self.ended
        }
        fn idle_since(&self) -> Instant {
            self.idle_since
        }
    }

    fn fake(id: u32, ended: bool, idle_for: Duration) -> Fake {
        Fake {
            id,
            ended,
            idle_since: Instant::now() - idle_for,
        }
    }

    #[test]
    fn take_gives_the_most_recent_open_connection_and_counts_the_ended_ones_it_drops() {
        let pool = Pool::new();
        for (id, ended) in [(1, false), (2, false), (3, true)] {
            assert!(pool.put(fake(id, ended, Duration::ZERO)).is_ok());
        }
        let taken = pool.take();
        assert_eq!(taken.connection.map(|c| c.id), Some(2));
        assert_eq!(taken.left, 2);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn take_matching_leaves_the_others_in_place() {
        let pool = Pool::new();
        for id in [1, 2, 3] {
            assert!(pool.put(fake(id, false, Duration::ZERO)).is_ok());
        }
        let taken = pool.take_matching(|c| c.id == 2);
        assert_eq!(taken.connection.map(|c| c.id), Some(2));
        assert_eq!(taken.left, 1);
        assert!(pool.take_matching(|c| c.id == 2).connection.is_none());
        assert_eq!(pool.take().connection.map(|c| c.id), Some(3));
    }

    #[test]
    fn sweep_drops_only_the_ended() {
        let pool = Pool::new();
        for (id, ended) in [(1, true), (2, false), (3, true)] {
            assert!(pool.put(fake(id, ended, Duration::ZERO)).is_ok());
        }
        assert_eq!(pool.sweep(), 2);
        assert_eq!(pool.take().connection.map(|c| c.id), Some(2));
    }

    #[test]
    fn expire_takes_out_those_idle_too_long() {
        let pool = Pool::new();
        assert!(pool.put(fake(1, false, Duration::from_secs(60))).is_ok());
        assert!(pool.put(fake(2, false, Duration::ZERO)).is_ok());
        let expired = pool.expire(Duration::from_secs(30));
        assert_eq!(expired.iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn put_unless_decides_under_the_pool_lock() {
        let pool = Pool::new();
        let refused_up_to = std::sync::atomic::AtomicU32::new(0);
        let refuse = |c: &Fake| c.id <= refused_up_to.load(std::sync::atomic::Ordering::Relaxed);
        assert!(pool.put_unless(fake(1, false, Duration::ZERO), refuse).is_ok());
        std::thread::scope(|s| {
            // A close (raise the bound, then empty the pool) runs while the put decides: it
            // waits for the pool's lock, so whatever the decision, the connection is not left
            // pooled (checked before taking the lock, a put could land after the close).
            let mut closer = None;
            let got = pool.put_unless(fake(2, false, Duration::ZERO), |c| {
                closer = Some(s.spawn(|| {
                    refused_up_to.store(2, std::sync::atomic::Ordering::Relaxed);
                    pool.expire(Duration::ZERO).len()
                }));
                refuse(c)
            });
            let emptied = closer.unwrap().join().unwrap();
            assert_eq!(
                emptied + usize::from(got.is_err()),
                2,
                "refused, or taken out by the close"
            );
        });
        assert_eq!(pool.len(), 0);
        assert!(pool.put_unless(fake(2, false, Duration::ZERO), refuse).is_err());
    }

    #[test]
    fn a_closed_pool_gives_back_what_it_is_given() {
        let pool = Pool::new();
        assert!(pool.put(fake(1, false, Duration::ZERO)).is_ok());
        assert_eq!(pool.close().len(), 1);
        assert_eq!(
            pool.put(fake(2, false, Duration::ZERO)).err().map(|c| c.id),
            Some(2)
        );
        assert_eq!(pool.len(), 0);
    }
}
