//! The in-sync replica set's decisions, as pure functions of positions and
//! times (Kafka's `Partition.maybeShrinkIsr`/`maybeExpandIsr`,
//! `Replica.updateFetchStateOrThrow`, `maybeIncrementLeaderHW`):
//!
//! * [`record_fetch`]: a follower's fetch at `fetch_offset` is its log end
//!   offset; it is caught up as of this fetch if it asked for the leader's
//!   log end, or as of its previous fetch if it asked for at least the log
//!   end the leader had then;
//! * [`out_of_sync`]: ISR members that have not caught up within the lag
//!   time (a follower at the leader's log end is never out of sync);
//! * [`may_join`]: a follower rejoins once its log end reached the high
//!   watermark and the start of the leader's current epoch;
//! * [`high_watermark`]: the lowest log end offset across the ISR.

use std::time::{Duration, Instant};

use super::partition_state::BrokerId;

/// What the leader knows of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerPosition {
    /// The follower's log end offset (its last fetch offset); None before
    /// its first fetch in this leader epoch.
    pub log_end_offset: Option<i64>,
    /// The last time it was known caught up with the leader's log end.
    pub last_caught_up: Instant,
    pub last_fetch: Instant,
    /// The leader's log end at the follower's last fetch.
    pub last_fetch_leader_leo: i64,
}

/// A follower fetched at `fetch_offset` at `now`, the leader's log end
/// being `leader_leo`.
pub fn record_fetch(f: &mut FollowerPosition, fetch_offset: i64, leader_leo: i64, now: Instant) {
    if fetch_offset >= leader_leo {
        f.last_caught_up = now;
    } else if f.last_fetch_leader_leo >= 0 && fetch_offset >= f.last_fetch_leader_leo {
        f.last_caught_up = f.last_caught_up.max(f.last_fetch);
    }
    f.log_end_offset = Some(fetch_offset);
    f.last_fetch_leader_leo = leader_leo;
    f.last_fetch = now;
}

/// The members of `isr` (other than the leader, `local`) that are out of
/// sync at `now`: behind the leader's log end and not caught up within
/// `lag`. An ISR of the leader alone never shrinks.
pub fn out_of_sync(
    isr: &[BrokerId],
    local: BrokerId,
    leader_leo: i64,
    position: impl Fn(BrokerId) -> Option<FollowerPosition>,
    now: Instant,
    lag: Duration,
) -> Vec<BrokerId> {
    isr.iter()
        .copied()
        .filter(|b| *b != local)
        .filter(|b| match position(*b) {
            Some(p) => {
                p.log_end_offset != Some(leader_leo)
                    && now.saturating_duration_since(p.last_caught_up) > lag
            }
            // Never seen in this epoch: nothing says it is in sync, but it
            // gets the lag time from when the leader started tracking.
            None => false,
        })
        .collect()
}

/// Whether a follower outside the ISR may join it: its log end reached the
/// high watermark and the offset the leader's current epoch started at.
pub fn may_join(follower_leo: Option<i64>, high_watermark: i64, epoch_start_offset: i64) -> bool {
    follower_leo.is_some_and(|leo| leo >= high_watermark && leo >= epoch_start_offset)
}

/// The lowest log end offset across `isr` (the leader's is `leader_leo`); a
/// member whose position is not known yet holds it at -1.
pub fn high_watermark(
    local: BrokerId,
    leader_leo: i64,
    isr: &[BrokerId],
    follower_leo: impl Fn(BrokerId) -> Option<i64>,
) -> i64 {
    isr.iter()
        .map(|b| {
            if *b == local {
                leader_leo
            } else {
                follower_leo(*b).unwrap_or(-1)
            }
        })
        .min()
        .unwrap_or(leader_leo)
}

/// `isr` without `gone`, in order.
pub fn without(isr: &[BrokerId], gone: &[BrokerId]) -> Vec<BrokerId> {
    isr.iter().copied().filter(|b| !gone.contains(b)).collect()
}

/// `isr` with `joining` added at the end (once).
pub fn with(isr: &[BrokerId], joining: BrokerId) -> Vec<BrokerId> {
    let mut out = isr.to_vec();
    if !out.contains(&joining) {
        out.push(joining);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(at: Instant) -> FollowerPosition {
        FollowerPosition {
            log_end_offset: None,
            last_caught_up: at,
            last_fetch: at,
            last_fetch_leader_leo: -1,
        }
    }

    #[test]
    fn a_fetch_at_the_log_end_is_caught_up_one_at_the_previous_end_was_then() {
        let t0 = Instant::now();
        let mut f = pos(t0);
        let t1 = t0 + Duration::from_secs(1);
        record_fetch(&mut f, 10, 10, t1);
        assert_eq!(f.last_caught_up, t1);
        assert_eq!(f.log_end_offset, Some(10));
        // The leader grew to 20 meanwhile; the follower asks for 10 again:
        // behind now, and no more caught up than at t1.
        let t2 = t0 + Duration::from_secs(2);
        record_fetch(&mut f, 10, 20, t2);
        assert_eq!(f.last_caught_up, t1);
        // It asks for 20, the leader is at 30: it had what the leader had
        // at its previous fetch (t2), so it was caught up then.
        let t3 = t0 + Duration::from_secs(3);
        record_fetch(&mut f, 20, 30, t3);
        assert_eq!(f.last_caught_up, t2);
        // Behind what the leader had at the previous fetch: no change.
        let t4 = t0 + Duration::from_secs(4);
        record_fetch(&mut f, 25, 40, t4);
        assert_eq!(f.last_caught_up, t2);
    }

    #[test]
    fn out_of_sync_after_the_lag_unless_at_the_log_end() {
        let t0 = Instant::now();
        let lag = Duration::from_millis(500);
        let mut stale = pos(t0);
        stale.log_end_offset = Some(5);
        let mut at_end = pos(t0);
        at_end.log_end_offset = Some(10);
        let position = |b: BrokerId| match b {
            2 => Some(stale),
            3 => Some(at_end),
            _ => None,
        };
        let now = t0 + Duration::from_millis(400);
        assert!(out_of_sync(&[1, 2, 3], 1, 10, position, now, lag).is_empty());
        let now = t0 + Duration::from_millis(600);
        assert_eq!(
            out_of_sync(&[1, 2, 3, 4], 1, 10, position, now, lag),
            vec![2]
        );
        assert!(out_of_sync(&[1], 1, 10, position, now, lag).is_empty());
    }

    #[test]
    fn joining_needs_the_high_watermark_and_the_epoch_start() {
        assert!(!may_join(None, 0, 0));
        assert!(may_join(Some(10), 10, 8));
        assert!(!may_join(Some(9), 10, 8));
        assert!(!may_join(Some(10), 5, 12));
        assert!(may_join(Some(12), 5, 12));
    }

    #[test]
    fn the_high_watermark_is_the_lowest_isr_log_end() {
        let leo = |b: BrokerId| match b {
            2 => Some(7),
            3 => Some(9),
            _ => None,
        };
        assert_eq!(high_watermark(1, 10, &[1], leo), 10);
        assert_eq!(high_watermark(1, 10, &[1, 3], leo), 9);
        assert_eq!(high_watermark(1, 10, &[1, 2, 3], leo), 7);
        assert_eq!(high_watermark(1, 10, &[1, 4], leo), -1, "unknown holds it");
        assert_eq!(without(&[1, 2, 3], &[2]), vec![1, 3]);
        assert_eq!(with(&[1, 3], 2), vec![1, 3, 2]);
        assert_eq!(with(&[1, 3], 3), vec![1, 3]);
    }
}
