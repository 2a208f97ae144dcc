//! Where the group coordinator lives in a cluster (issue 14), as in Kafka:
//! with the leader of its partition of `__consumer_offsets`, and it moves
//! with that leadership.
//!
//! * The topic is a replicated internal topic, created through the
//!   controller the first time a group coordinator is looked for
//!   (FindCoordinator), with Kafka's `offsets.topic.replication.factor`
//!   lowered to the live brokers at creation, `cleanup.policy=compact`.
//!   One partition, as the single broker has it: every group maps to
//!   partition 0 ([`OFFSETS_PARTITION`]), exactly as there.
//! * A broker that becomes its leader loads the groups and offsets it holds
//!   from the replicated log (the single broker's loading path: the
//!   offsets store read afresh, KIP-848 groups read back), and is their
//!   coordinator from then on; one that stops leading it forgets them.
//!   [`after_assignments`] runs after each metadata change the replica
//!   manager applied (leader and follower transitions happen only there).
//! * Group requests to a broker that does not coordinate get
//!   NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS while it loads), so
//!   clients find the coordinator again.
//! * Writes to the topic (commits, KIP-848 group records, deletions) are
//!   appended under the partition's leadership (no append of an old
//!   leadership lands after a new role began) and answered only once the
//!   high watermark passed them, as Kafka's `offsets.commit.required.acks`
//!   of -1 ([`replicated`]).
//!
//! A broker alone coordinates every group itself: nothing here applies.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::errors::{code, warn};
use crate::Shared;
use ottla_storage::offsets::OFFSETS_TOPIC;

/// The partition of `__consumer_offsets` every group maps to: the topic
/// has one partition, as on the single broker.
pub const OFFSETS_PARTITION: i32 = 0;

/// Partitions of `__consumer_offsets` in a cluster: as the single broker.
pub const OFFSETS_TOPIC_PARTITIONS: i32 = 1;

/// Kafka's `offsets.topic.replication.factor` default.
pub const DEFAULT_OFFSETS_TOPIC_REPLICATION_FACTOR: i16 = 3;

/// Kafka's `offsets.commit.timeout.ms`: how long a commit waits for the
/// in-sync replicas.
pub const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_millis(5000);

/// How long FindCoordinator waits for the controller to create the topic.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// This broker's part in coordinating groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// It does not lead the offsets partition.
    NotCoordinator,
    /// It leads it in this leader epoch and is reading its groups back.
    Loading(i32),
    /// It leads it in this leader epoch, groups loaded.
    Active(i32),
}

/// What a change of leadership asks of the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Load the groups, for the leadership in this epoch.
    Load(i32),
    /// Forget them.
    Unload,
}

/// The step from `phase` when this broker now leads the offsets partition
/// in leader epoch `leads` (`None`: it does not lead it). A new epoch
/// loads again even when this broker led before: a follower in between may
/// have truncated or copied what its loaded state no longer matches.
pub fn step(phase: Phase, leads: Option<i32>) -> Step {
    match (phase, leads) {
        (Phase::Active(e) | Phase::Loading(e), Some(l)) if e == l => Step::Nothing,
        (_, Some(l)) => Step::Load(l),
        (Phase::NotCoordinator, None) => Step::Nothing,
        (_, None) => Step::Unload,
    }
}

/// The error of a group request in `phase` (NONE: this broker coordinates).
pub fn check(phase: Phase) -> i16 {
    match phase {
        Phase::Active(_) => code::NONE,
        Phase::Loading(_) => code::COORDINATOR_LOAD_IN_PROGRESS,
        Phase::NotCoordinator => code::NOT_COORDINATOR,
    }
}

/// The replication factor and `min.insync.replicas` of `__consumer_offsets`
/// created now: the setting lowered to the live brokers (at least 1), and
/// the brokers' `min.insync.replicas` lowered to that factor, so commits
/// are possible at all with fewer brokers.
pub fn offsets_topic_plan(setting: i16, live_brokers: usize, min_insync: i32) -> (i16, i32) {
    let live = i16::try_from(live_brokers).unwrap_or(i16::MAX).max(1);
    let rf = setting.clamp(1, live);
    (rf, min_insync.clamp(1, i32::from(rf)))
}

/// A commit's answer from its wait for the in-sync replicas, mapped as
/// Kafka's group coordinator maps an append's errors: leadership gone is
/// NOT_COORDINATOR (the client finds the new one); a timeout or too few
/// replicas is COORDINATOR_NOT_AVAILABLE (the client retries; the write
/// may yet be replicated, and a retried commit is harmless).
pub fn commit_error(wait: i16) -> i16 {
    match wait {
        code::NONE => code::NONE,
        code::NOT_LEADER_OR_FOLLOWER | code::KAFKA_STORAGE_ERROR => code::NOT_COORDINATOR,
        code::REQUEST_TIMED_OUT
        | code::NOT_ENOUGH_REPLICAS
        | code::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | code::UNKNOWN_TOPIC_OR_PARTITION => code::COORDINATOR_NOT_AVAILABLE,
        other => other,
    }
}

/// The group coordinator's placement state (one per broker).
pub struct GroupPlacement {
    phase: Mutex<Phase>,
    /// Serialises loads and unloads.
    changing: Mutex<()>,
}

impl Default for GroupPlacement {
    fn default() -> Self {
        GroupPlacement {
            phase: Mutex::new(Phase::NotCoordinator),
            changing: Mutex::new(()),
        }
    }
}

impl GroupPlacement {
    pub fn phase(&self) -> Phase {
        *self.phase.lock()
    }
}

/// NONE if this broker coordinates groups now (always, alone), else
/// NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS.
pub fn group_check(shared: &Shared) -> i16 {
    if shared.cluster.is_none() {
        return code::NONE;
    }
    check(shared.group_placement.phase())
}

/// The leader epoch in which this broker leads the offsets partition now.
fn leads(shared: &Shared) -> Option<i32> {
    match shared
        .replicas
        .leader_partition(OFFSETS_TOPIC, OFFSETS_PARTITION)
    {
        Ok(Some(p)) if !p.is_retired() => Some(p.state.lock().assignment.leader_epoch),
        _ => None,
    }
}

/// After the replica manager applied a metadata change: load the groups
/// when this broker became the offsets partition's leader, forget them
/// when it stopped. Blocking (reads the log); called from the image
/// follower's callback.
pub fn after_assignments(shared: &Shared) {
    if shared.cluster.is_none() {
        return;
    }
    let _one = shared.group_placement.changing.lock();
    let leads = leads(shared);
    match step(shared.group_placement.phase(), leads) {
        Step::Nothing => {}
        Step::Load(epoch) => {
            *shared.group_placement.phase.lock() = Phase::Loading(epoch);
            // Whatever this process knew of the topic may be another
            // leadership's: read it again from the start.
            shared.groups.release_all();
            shared.store.reload_offsets();
            let loaded = crate::blocking(|| {
                shared
                    .store
                    .offsets()
                    .and_then(|o| o.groups().map(|g| g.len()))
            });
            match loaded {
                Ok(n) => {
                    shared.consumer_groups.reload();
                    crate::errors::debug(&format!(
                        "broker {}: group coordinator in epoch {epoch} ({n} groups with offsets)",
                        shared.node_id()
                    ));
                    *shared.group_placement.phase.lock() = Phase::Active(epoch);
                }
                Err(e) => {
                    // Not the coordinator (clients get NOT_COORDINATOR
                    // and look again); the next metadata change tries
                    // the load again.
                    warn(&format!("cannot load the groups of {OFFSETS_TOPIC}: {e}"));
                    *shared.group_placement.phase.lock() = Phase::NotCoordinator;
                }
            }
        }
        Step::Unload => {
            *shared.group_placement.phase.lock() = Phase::NotCoordinator;
            shared.groups.release_all();
            shared.consumer_groups.release_all();
            shared.store.reload_offsets();
            crate::errors::debug(&format!(
                "broker {}: no longer the group coordinator",
                shared.node_id()
            ));
        }
    }
}

/// Run `write` (an append to `__consumer_offsets`) under this broker's
/// leadership of the offsets partition: NOT_COORDINATOR if it does not
/// coordinate, and no new leadership begins while it runs. A broker alone
/// just runs it.
pub fn with_leadership<T>(shared: &Shared, write: impl FnOnce() -> T) -> Result<T, i16> {
    if shared.cluster.is_none() {
        return Ok(write());
    }
    let p = match shared
        .replicas
        .leader_partition(OFFSETS_TOPIC, OFFSETS_PARTITION)
    {
        Ok(Some(p)) => p,
        _ => return Err(code::NOT_COORDINATOR),
    };
    let _lead = p.leadership.read();
    if p.is_retired() {
        return Err(code::NOT_COORDINATOR);
    }
    let epoch = p.state.lock().assignment.leader_epoch;
    match shared.group_placement.phase() {
        Phase::Active(e) if e == epoch => Ok(write()),
        phase => Err(match check(phase) {
            code::NONE => code::NOT_COORDINATOR,
            c => c,
        }),
    }
}

/// Wait until everything appended to the offsets partition so far is on
/// every in-sync replica (the high watermark passed it), as Kafka answers
/// commits (`offsets.commit.required.acks` = -1), up to
/// `offsets.commit.timeout.ms`. NONE at once for a broker alone; else
/// NONE, NOT_COORDINATOR (leadership moved) or COORDINATOR_NOT_AVAILABLE.
pub async fn replicated(shared: &Arc<Shared>) -> i16 {
    if shared.cluster.is_none() {
        return code::NONE;
    }
    let p = match shared
        .replicas
        .leader_partition(OFFSETS_TOPIC, OFFSETS_PARTITION)
    {
        Ok(Some(p)) => p,
        _ => return code::NOT_COORDINATOR,
    };
    // The coordinator appended to the log itself: the high watermark of an
    // ISR of the leader alone follows its log end.
    shared.replicas.after_leader_append(&p);
    let end = match p.log.log_end_offset() {
        Ok(e) => e,
        Err(e) => return commit_error(crate::errors::kafka_code(&e)),
    };
    let waited = shared
        .replicas
        .wait_for_replication(
            vec![(OFFSETS_TOPIC.to_string(), OFFSETS_PARTITION, end)],
            OFFSETS_COMMIT_TIMEOUT,
        )
        .await;
    commit_error(waited.first().copied().unwrap_or(code::NOT_COORDINATOR))
}

/// FindCoordinator for a group in a cluster: the leader of the offsets
/// partition, with its advertised address. The topic is created through
/// the controller when it does not exist yet. COORDINATOR_NOT_AVAILABLE
/// while it has no leader (or cannot be created now).
pub async fn find(shared: &Arc<Shared>) -> Result<(i32, String, u16), i16> {
    let Some(node) = &shared.cluster else {
        return Err(code::COORDINATOR_NOT_AVAILABLE);
    };
    let cfg = node.config();
    find_internal(
        shared,
        InternalTopic {
            name: OFFSETS_TOPIC,
            partitions: OFFSETS_TOPIC_PARTITIONS,
            partition: OFFSETS_PARTITION,
            replication_factor: cfg.offsets_topic_replication_factor,
            min_insync_replicas: cfg.min_insync_replicas,
        },
    )
    .await
}

/// An internal topic a coordinator lives with (`__consumer_offsets`,
/// `__transaction_state`), as [`find_internal`] creates it.
pub(super) struct InternalTopic {
    pub name: &'static str,
    pub partitions: i32,
    /// The partition whose leader coordinates.
    pub partition: i32,
    /// The setting, capped at the live brokers.
    pub replication_factor: i16,
    /// The setting, capped at the replication factor.
    pub min_insync_replicas: i32,
}

/// The leader of `topic.partition`, with its advertised address, the topic
/// created (compacted) through the controller when it does not exist yet.
/// COORDINATOR_NOT_AVAILABLE while it has no leader (or cannot be created
/// now). Shared by the group and the transaction coordinators' placement.
pub(super) async fn find_internal(
    shared: &Arc<Shared>,
    topic: InternalTopic,
) -> Result<(i32, String, u16), i16> {
    let Some(node) = &shared.cluster else {
        return Err(code::COORDINATOR_NOT_AVAILABLE);
    };
    use crate::cluster::assignments::{coordinator_for, live_brokers, CoordinatorLookup};
    let image = node.image();
    let lookup = coordinator_for(&image, topic.name, topic.partition);
    let image = if lookup == CoordinatorLookup::NoTopic {
        let live = live_brokers(&image).len();
        let (rf, min_isr) =
            offsets_topic_plan(topic.replication_factor, live, topic.min_insync_replicas);
        let configs = [
            ("cleanup.policy", "compact".to_string()),
            // Kafka's offsets.topic.segment.bytes and
            // transaction.state.log.segment.bytes, as the single broker.
            ("segment.bytes", "104857600".to_string()),
            ("min.insync.replicas", min_isr.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let created = tokio::time::timeout(
            CREATE_TIMEOUT,
            node.create_topic(topic.name, topic.partitions, rf, configs, false),
        )
        .await;
        match created {
            Ok(Ok(_)) => {}
            // Another broker created it first: fine.
            Ok(Err((c, _))) if c == code::TOPIC_ALREADY_EXISTS => {}
            Ok(Err((c, m))) => {
                warn(&format!("cannot create {}: {m} ({c})", topic.name));
                return Err(code::COORDINATOR_NOT_AVAILABLE);
            }
            Err(_) => return Err(code::COORDINATOR_NOT_AVAILABLE),
        }
        node.image()
    } else {
        image
    };
    match coordinator_for(&image, topic.name, topic.partition) {
        CoordinatorLookup::Leader(id) => live_brokers(&image)
            .into_iter()
            .find(|b| b.0 == id)
            .map(|(id, host, port, _)| (id, host, port))
            .ok_or(code::COORDINATOR_NOT_AVAILABLE),
        _ => Err(code::COORDINATOR_NOT_AVAILABLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_changes_load_and_unload() {
        use Phase::*;
        assert_eq!(step(NotCoordinator, None), Step::Nothing);
        assert_eq!(step(NotCoordinator, Some(3)), Step::Load(3));
        assert_eq!(step(Active(3), Some(3)), Step::Nothing);
        assert_eq!(step(Loading(3), Some(3)), Step::Nothing);
        // Led again in a later epoch (after following in between): reload.
        assert_eq!(step(Active(3), Some(5)), Step::Load(5));
        assert_eq!(step(Active(3), None), Step::Unload);
        assert_eq!(step(Loading(3), None), Step::Unload);
    }

    #[test]
    fn requests_are_routed_by_phase() {
        assert_eq!(check(Phase::Active(1)), code::NONE);
        assert_eq!(check(Phase::Loading(1)), code::COORDINATOR_LOAD_IN_PROGRESS);
        assert_eq!(check(Phase::NotCoordinator), code::NOT_COORDINATOR);
    }

    #[test]
    fn the_offsets_topic_fits_the_live_brokers() {
        assert_eq!(offsets_topic_plan(3, 3, 2), (3, 2));
        assert_eq!(offsets_topic_plan(3, 5, 2), (3, 2));
        assert_eq!(offsets_topic_plan(3, 1, 2), (1, 1));
        assert_eq!(offsets_topic_plan(3, 2, 2), (2, 2));
        assert_eq!(offsets_topic_plan(3, 0, 1), (1, 1));
        assert_eq!(offsets_topic_plan(1, 3, 2), (1, 1));
    }

    #[test]
    fn commit_errors_are_kafkas() {
        assert_eq!(commit_error(code::NONE), code::NONE);
        assert_eq!(
            commit_error(code::NOT_LEADER_OR_FOLLOWER),
            code::NOT_COORDINATOR
        );
        assert_eq!(
            commit_error(code::REQUEST_TIMED_OUT),
            code::COORDINATOR_NOT_AVAILABLE
        );
        assert_eq!(
            commit_error(code::NOT_ENOUGH_REPLICAS_AFTER_APPEND),
            code::COORDINATOR_NOT_AVAILABLE
        );
    }
}
