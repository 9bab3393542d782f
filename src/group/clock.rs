//! Raft ticks from a monotonic clock.
//!
//! The core counts time in ticks: election timeouts, heartbeats and the
//! leader lease (`crate::raft::read`) are so many ticks. A driver that
//! ticked once per timer wake-up would lose time whenever the process does
//! not run: a leader paused (SIGSTOP, a VM stall, a long GC-like hiccup)
//! for longer than its lease would resume with a lease that did not age,
//! and serve a lease read while another leader has already written
//! (the pause hazard of leases: Raft thesis §6.4.1; etcd and TiKV read
//! leases from a monotonic clock for this reason).
//!
//! A [`TickClock`] turns elapsed monotonic time into the ticks that are
//! due, so a pause of any length advances the core's clock by at least
//! what the lease and the election timer need. The driver asks it at the
//! start of every turn, before it serves any request, so the first read
//! after a pause already sees the aged lease.

use std::cell::Cell;
use std::rc::Rc;

/// Elapsed monotonic time as Raft ticks. (Not `Clone`: a copy would share
/// the next tick's time with its [`TickClock::lag_source`]s.)
#[derive(Debug)]
pub struct TickClock {
    tick_us: u64,
    /// When the next tick is due (µs on the caller's monotonic clock);
    /// shared with the [`TickClock::lag_source`]s.
    next_us: Rc<Cell<u64>>,
    /// Ticks handed out at most per call: `2 × election_ticks + 1` (see
    /// [`TickClock::new`]).
    catch_up_max: u64,
}

impl TickClock {
    /// A clock of `tick_us` per tick whose first tick is due at
    /// `first_us`, for a core whose election timeout is `election_ticks`
    /// (randomized up to twice that).
    ///
    /// It hands out at most `2 × election_ticks + 1` ticks at once: that
    /// bounds the work after a long pause (every replica ticks that many
    /// times) and is still more than the longest election timeout, so any
    /// pause long enough to matter expires the lease and fires the
    /// election timer.
    pub fn new(tick_us: u64, first_us: u64, election_ticks: u32) -> TickClock {
        TickClock {
            tick_us: tick_us.max(1),
            next_us: Rc::new(Cell::new(first_us)),
            catch_up_max: 2 * u64::from(election_ticks) + 1,
        }
    }

    /// The ticks due at `now_us` since the last call (0 if none), at most
    /// `catch_up_max`; time beyond that bound is dropped, not carried.
    /// A clock that goes backwards yields 0.
    pub fn due(&mut self, now_us: u64) -> u64 {
        let n = pending(self.next_us.get(), self.tick_us, now_us);
        if n == 0 {
            return 0;
        }
        if n > self.catch_up_max {
            self.next_us.set(now_us + self.tick_us);
            self.catch_up_max
        } else {
            self.next_us.set(self.next_us.get() + n * self.tick_us);
            n
        }
    }

    /// When the `ahead`-th tick not yet handed out is due (µs on the
    /// caller's clock; `ahead` 0 counts as 1): a driver that sleeps until
    /// then and asks [`TickClock::due`] gets that tick, and none is
    /// dropped while `ahead` is at most [`TickClock::catch_up_max`].
    pub fn due_at_us(&self, ahead: u64) -> u64 {
        let later = ahead.max(1) - 1;
        self.next_us
            .get()
            .saturating_add(later.saturating_mul(self.tick_us))
    }

    /// The most ticks [`TickClock::due`] hands out at once.
    pub fn catch_up_max(&self) -> u64 {
        self.catch_up_max
    }

    /// The ticks due at the time `now_us` tells that [`TickClock::due`]
    /// has not handed out yet (uncapped), as a function for the Raft
    /// clock's lag (`raft::Clock::set_lag_source`): the leader lease of a
    /// check made late in a long turn counts them.
    pub fn lag_source(&self, now_us: impl Fn() -> u64 + 'static) -> impl Fn() -> u64 + 'static {
        let (next_us, tick_us) = (self.next_us.clone(), self.tick_us);
        move || pending(next_us.get(), tick_us, now_us())
    }
}

/// Ticks due at `now_us` when the next is due at `next_us`.
fn pending(next_us: u64, tick_us: u64, now_us: u64) -> u64 {
    if now_us < next_us {
        0
    } else {
        (now_us - next_us) / tick_us + 1
    }
}

#[cfg(test)]
mod tests {
    use super::TickClock;

    #[test]
    fn ticks_count_elapsed_time_not_wake_ups() {
        // Election timeout 20 ticks: at most 41 at once.
        let mut c = TickClock::new(10_000, 10_000, 20);
        assert_eq!(c.due(9_999), 0);
        assert_eq!(c.due(10_000), 1);
        assert_eq!(c.due(10_001), 0);
        // A late wake-up: the ticks it missed (due at 20, 30, 40 ms) are
        // handed out.
        assert_eq!(c.due(45_000), 3);
        assert_eq!(c.due(50_000), 1);
        // The lag: what is due and not handed out yet, uncapped.
        let now = std::rc::Rc::new(std::cell::Cell::new(50_000u64));
        let t = now.clone();
        let lag = c.lag_source(move || t.get());
        assert_eq!(lag(), 0);
        now.set(59_999);
        assert_eq!(lag(), 0);
        now.set(60_000);
        assert_eq!(lag(), 1);
        now.set(10_000_000);
        assert_eq!(lag(), 995);
        assert_eq!(c.due(60_000), 1);
        now.set(69_999);
        assert_eq!(lag(), 0, "handed out");
        // A pause of 5 s: capped at catch_up_max, the rest dropped.
        assert_eq!(c.due(5_050_000), 41);
        assert_eq!(c.due(5_059_999), 0);
        assert_eq!(c.due(5_060_000), 1);
        // Exactly at the cap.
        assert_eq!(c.due(5_060_000 + 41 * 10_000), 41);
        // Backwards: nothing.
        assert_eq!(c.due(1), 0);
    }

    #[test]
    fn a_driver_that_sleeps_until_due_at_us_gets_every_tick() {
        let mut c = TickClock::new(10_000, 10_000, 20);
        assert_eq!(c.catch_up_max(), 41);
        assert_eq!(c.due_at_us(0), 10_000);
        assert_eq!(c.due_at_us(1), 10_000);
        assert_eq!(c.due_at_us(3), 30_000);
        assert_eq!(c.due(c.due_at_us(3) - 1), 2);
        assert_eq!(c.due_at_us(1), 30_000);
        // Sleeping the longest it may: all of them handed out, none dropped.
        let at = c.due_at_us(c.catch_up_max());
        assert_eq!(c.due(at), 41);
        assert_eq!(c.due_at_us(1), at + 10_000);
        // One tick later than that would drop time.
        let at = c.due_at_us(c.catch_up_max() + 1);
        assert_eq!(c.due(at), 41);
        assert_eq!(
            c.due_at_us(1),
            at + 10_000,
            "expected the 42nd tick to be dropped"
        );
    }
}
