//! The operations of Kafka's `kafka-consumer-groups.sh` on a directory:
//! list, describe (members, assignment, committed offsets and lag), delete,
//! and reset offsets.
//!
//! Delete and reset must not race a live member (it would commit over the
//! reset, or own partitions of a deleted group). They take the group's coordinator claim
//! lock *exclusively* for their duration: that fails while any embedded
//! member (shared holder) or the broker (exclusive holder) is in the group,
//! and keeps new members out, embedded or the broker's, until the operation is done.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ottla_storage::error::{Error, Result};
use ottla_storage::log::Durability;
use ottla_storage::offsets::OffsetEntry;
use ottla_storage::store::Store;
use ottla_storage::topic::TopicId;

use super::{claim_path, groups_with_live_members, GroupDir};
use ottla_storage::ofd::ByteLocks;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: u32,
    pub committed: i64,
    pub end_offset: i64,
    pub lag: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// "Empty", "Stable", "PreparingRebalance" or "Dead" (Kafka's names).
    pub state: &'static str,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<GroupOffset>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    /// The first offset with a timestamp at or after this (ms); the log end
    /// where there is none.
    Timestamp(i64),
    /// Explicit (topic, partition, offset), clamped into the log's range.
    Offsets(Vec<(String, u32, i64)>),
}

/// Groups with committed offsets or live members, sorted.
pub fn list_groups(store: &Arc<Store>) -> Result<Vec<String>> {
    let mut all: BTreeSet<String> = store.offsets()?.groups()?.into_iter().collect();
    all.extend(groups_with_live_members(store)?);
    Ok(all.into_iter().collect())
}

pub fn describe_group(store: &Arc<Store>, group: &str) -> Result<GroupDescription> {
    let offsets_store = store.offsets()?;
    let mut offsets = Vec::new();
    for (topic, partition, c) in offsets_store.group_offsets(group)? {
        let end = store
            .partition_by_name(&topic, partition)
            .and_then(|l| l.offsets())
            .map_or(-1, |(_, e)| e);
        offsets.push(GroupOffset {
            lag: if end >= 0 { (end - c.offset).max(0) } else { 0 },
            topic,
            partition,
            committed: c.offset,
            end_offset: end,
        });
    }
    let mut members = Vec::new();
    let mut protocol = String::new();
    let mut settled = true;
    if let Some(dir) = GroupDir::existing(store, group)? {
        let st = dir.read_state()?;
        let mut targets = BTreeSet::new();
        for m in &st.members {
            if !dir.member_alive(&m.token)? {
                continue;
            }
            let assignment = st.assigned_to(&m.member_id).to_vec();
            targets.extend(assignment.iter().cloned());
            members.push(MemberDescription {
                member_id: m.member_id.clone(),
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                assignment,
            });
        }
        if !members.is_empty() {
            protocol = st.protocol.clone();
            // Settled when every partition of the subscribed topics is held
            // exactly where the assignment says: assigned ones are held (by
            // their new owner), unassigned ones by nobody.
            for (topic, &n) in &st.topics {
                for p in 0..n {
                    let held = dir.partition_held(topic, p)?;
                    if held != targets.contains(&(topic.clone(), p)) {
                        settled = false;
                    }
                }
            }
        }
    }
    let state = if !members.is_empty() {
        if settled {
            "Stable"
        } else {
            "PreparingRebalance"
        }
    } else if broker_holds_claim(store, group)? {
        // Coordinated by the broker on this directory: its members are in
        // the broker's memory, not in these files.
        "Stable"
    } else if offsets.is_empty() {
        "Dead"
    } else {
        "Empty"
    };
    Ok(GroupDescription {
        group_id: group.to_string(),
        state,
        protocol,
        members,
        offsets,
    })
}

fn broker_holds_claim(store: &Arc<Store>, group: &str) -> Result<bool> {
    let Some(claim) = ByteLocks::open_existing(&claim_path(store, group))? else {
        return Ok(false);
    };
    if claim.try_lock(0, false)? {
        claim.unlock(0)?;
        return Ok(false);
    }
    Ok(true)
}

/// Hold the coordinator claim exclusively (no member, embedded or the
/// broker's) while `f` runs.
fn with_group_empty<T>(
    store: &Arc<Store>,
    group: &str,
    f: impl FnOnce(Option<&GroupDir>) -> Result<T>,
) -> Result<T> {
    // Created if absent, so a member joining right now (it takes the claim
    // first) is excluded too.
    let claim = ByteLocks::open(&claim_path(store, group))?;
    if !claim.try_lock(0, true)? {
        return Err(Error::GroupNotEmpty(group.to_string()));
    }
    let dir = GroupDir::existing(store, group)?;
    // Dropping `claim` closes it, which releases the lock.
    f(dir.as_ref())
}

/// Commit for `group` from outside its membership: Kafka's "simple" commit
/// (no member id, generation -1), as a consumer with `group_id` and a
/// hand-made assignment, or a broker client not in the group, makes. Kafka
/// accepts it only while the group is empty and answers a non-member of an
/// active group with `UNKNOWN_MEMBER_ID` (`GroupCoordinator.handleCommitOffsets`);
/// here the group is active while anyone holds its coordinator claim, so
/// the claim is held exclusively for the write, as `reset_offsets` does.
/// Refused with `GroupCoordinatedByBroker` while the broker coordinates the
/// group, and `GroupNotEmpty` while embedded members are live.
pub fn commit_outside_group(
    store: &Arc<Store>,
    group: &str,
    offsets: &[(String, u32, i64, String)],
    durability: Durability,
) -> Result<()> {
    commit_outside_group_ids(store, group, offsets, &HashMap::new(), durability)
}

/// [`commit_outside_group`], stamping the topics in `ids` with those ids
/// (`OffsetStore::commit_with_ids`).
pub fn commit_outside_group_ids(
    store: &Arc<Store>,
    group: &str,
    offsets: &[(String, u32, i64, String)],
    ids: &HashMap<String, TopicId>,
    durability: Durability,
) -> Result<()> {
    let entries = ottla_storage::offsets::without_epochs(offsets);
    commit_outside_group_entries(store, group, &entries, ids, durability)
}

/// [`commit_outside_group`] with each partition's committed leader epoch
/// (the broker's OffsetCommit).
pub fn commit_outside_group_with_epochs(
    store: &Arc<Store>,
    group: &str,
    offsets: &[OffsetEntry],
    durability: Durability,
) -> Result<()> {
    commit_outside_group_entries(store, group, offsets, &HashMap::new(), durability)
}

fn commit_outside_group_entries(
    store: &Arc<Store>,
    group: &str,
    offsets: &[OffsetEntry],
    ids: &HashMap<String, TopicId>,
    durability: Durability,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    match with_group_empty(store, group, |_| {
        store
            .offsets()?
            .commit_entries(group, offsets, ids, durability)
    }) {
        Err(Error::GroupNotEmpty(_)) if broker_holds_claim(store, group)? => {
            Err(Error::GroupCoordinatedByBroker {
                group: group.to_string(),
            })
        }
        r => r,
    }
}

/// Delete the group's committed offsets (tombstones in
/// `__consumer_offsets`) and state; refused while it has live members.
/// Deleting a group that does not exist does nothing.
pub fn delete_group(store: &Arc<Store>, group: &str) -> Result<()> {
    with_group_empty(store, group, |dir| {
        store.offsets()?.delete_group(group)?;
        if let Some(d) = dir {
            d.clear_state()?;
        }
        Ok(())
    })
}

/// The topics a group's live embedded members subscribe to, `None` while
/// it has none (OffsetDelete refuses those topics, as Kafka does for a
/// group's subscribed topics).
pub fn live_subscription(store: &Arc<Store>, group: &str) -> Result<Option<BTreeSet<String>>> {
    let Some(dir) = GroupDir::existing(store, group)? else {
        return Ok(None);
    };
    let st = dir.read_state()?;
    for m in &st.members {
        if dir.member_alive(&m.token)? {
            return Ok(Some(st.topics.keys().cloned().collect()));
        }
    }
    Ok(None)
}

/// Commit new positions for the group; refused while it has live members.
/// `topics: None` means every topic the group has committed offsets for
/// (for explicit offsets, the partitions given). Returns what was committed.
pub fn reset_offsets(
    store: &Arc<Store>,
    group: &str,
    topics: Option<&[String]>,
    target: &ResetTarget,
) -> Result<Vec<(String, u32, i64)>> {
    with_group_empty(store, group, |_| {
        let offsets_store = store.offsets()?;
        let partitions: Vec<(String, u32)> = match (target, topics) {
            (ResetTarget::Offsets(explicit), _) => {
                explicit.iter().map(|(t, p, _)| (t.clone(), *p)).collect()
            }
            (_, Some(topics)) => {
                let mut v = Vec::new();
                for t in topics {
                    let topic = store.require_topic(t)?;
                    v.extend((0..topic.partitions).map(|p| (t.clone(), p)));
                }
                v
            }
            (_, None) => offsets_store
                .group_offsets(group)?
                .into_iter()
                .map(|(t, p, _)| (t, p))
                .collect(),
        };
        let mut out = Vec::with_capacity(partitions.len());
        for (i, (t, p)) in partitions.iter().enumerate() {
            let log = store.partition_by_name(t, *p)?;
            let (start, end) = log.offsets()?;
            let offset = match target {
                ResetTarget::Earliest => start,
                ResetTarget::Latest => end,
                ResetTarget::Timestamp(ts) => log.offset_for_time(*ts)?.map_or(end, |(o, _)| o),
                ResetTarget::Offsets(explicit) => explicit[i].2.clamp(start, end),
            };
            out.push((t.clone(), *p, offset));
        }
        let commits: Vec<(String, u32, i64, String)> = out
            .iter()
            .map(|(t, p, o)| (t.clone(), *p, *o, String::new()))
            .collect();
        offsets_store.commit(group, &commits, Durability::PageCache)?;
        Ok(out)
    })
}
