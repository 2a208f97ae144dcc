//! KIP-848 consumer groups in `__consumer_offsets`, as Kafka's group
//! coordinator keeps them, so a restarted broker resumes each group (its
//! epochs, members, target and current assignments) instead of fencing
//! every member.
//!
//! The records and their keys (Kafka's `ConsumerGroup*` record schemas):
//!
//! ```text
//! key v3  ConsumerGroupMetadata             (group)          -> group epoch
//! key v5  ConsumerGroupMemberMetadata       (group, member)  -> instance id, rack, client id and host,
//!                                                               subscription, assignor, rebalance timeout,
//!                                                               a classic member's ClassicMemberMetadata
//!                                                               (tagged field 0: session timeout, protocols)
//! key v6  ConsumerGroupTargetAssignmentMetadata (group)      -> assignment epoch
//! key v7  ConsumerGroupTargetAssignmentMember   (group, member) -> target partitions
//! key v8  ConsumerGroupCurrentMemberAssignment  (group, member) -> member epoch, previous epoch,
//!                                                               state, assigned, pending revocation
//! ```
//!
//! Keys are Kafka's fixed layout (version, then strings with an i16
//! length); values are version 0 of Kafka's flexible layouts (compact
//! strings and arrays, topics by id, no tagged fields written but a
//! classic member's metadata). A member
//! leaving tombstones its three records; the group's own two go when it
//! has neither members nor an epoch worth keeping (never, here: an empty
//! group keeps its epochs, as Kafka keeps it until it is deleted).
//!
//! The coordinator keeps, per group, the records it last wrote
//! ([`Records`]) and writes only what changed after each operation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ottla_storage::topic::TopicId;

use super::consumer_group::Assignment;

pub const GROUP_METADATA: i16 = 3;
pub const MEMBER_METADATA: i16 = 5;
pub const TARGET_METADATA: i16 = 6;
pub const TARGET_MEMBER: i16 = 7;
pub const CURRENT_ASSIGNMENT: i16 = 8;

/// Record key -> value, as last written for one group.
pub type Records = BTreeMap<Vec<u8>, Vec<u8>>;

/// What a member is, as its records say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberRecord {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// A member that uses the classic protocol (KIP-848's online
    /// migration): Kafka's `ClassicMemberMetadata`, tagged field 0.
    pub classic: Option<ClassicRecord>,
}

/// Kafka's `ClassicMemberMetadata`: what a classic member sent in its last
/// JoinGroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassicRecord {
    pub session_timeout_ms: i32,
    /// (protocol name, its metadata), in the member's order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
}

/// A member's current assignment record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentRecord {
    pub epoch: i32,
    pub previous_epoch: i32,
    /// 0 stable, 1 unrevoked partitions, 2 unreleased partitions (Kafka's
    /// `MemberState` values).
    pub state: i8,
    pub assigned: Assignment,
    pub revoking: Assignment,
}

/// A group as read back from its records.
#[derive(Clone, Debug, Default)]
pub struct GroupRecord {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, MemberRecord>,
    pub target: HashMap<String, Assignment>,
    pub current: HashMap<String, CurrentRecord>,
}

pub fn key(version: i16, group: &str, member: Option<&str>) -> Vec<u8> {
    let mut k = version.to_be_bytes().to_vec();
    put_str(&mut k, group);
    if let Some(m) = member {
        put_str(&mut k, m);
    }
    k
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s);
}

fn put_uvarint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_compact(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_uvarint(b, 0),
        Some(s) => {
            put_uvarint(b, s.len() as u64 + 1);
            b.extend_from_slice(s.as_bytes());
        }
    }
}

/// A value: version 0, the fields, no tagged fields.
fn value(fields: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = 0i16.to_be_bytes().to_vec();
    fields(&mut v);
    put_uvarint(&mut v, 0);
    v
}

fn put_compact_bytes(b: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(b, bytes.len() as u64 + 1);
    b.extend_from_slice(bytes);
}

/// `ClassicMemberMetadata`'s own bytes: session timeout, supported
/// protocols (name, metadata), no tagged fields.
fn classic_bytes(c: &ClassicRecord) -> Vec<u8> {
    let mut b = c.session_timeout_ms.to_be_bytes().to_vec();
    put_uvarint(&mut b, c.protocols.len() as u64 + 1);
    for (name, meta) in &c.protocols {
        put_compact(&mut b, Some(name));
        put_compact_bytes(&mut b, meta);
        put_uvarint(&mut b, 0);
    }
    put_uvarint(&mut b, 0);
    b
}

pub fn epoch_value(epoch: i32) -> Vec<u8> {
    value(|v| v.extend_from_slice(&epoch.to_be_bytes()))
}

pub fn member_value(m: &MemberRecord) -> Vec<u8> {
    let mut out = member_fields(m);
    if let Some(c) = &m.classic {
        // The tagged fields: one, `ClassicMemberMetadata` (tag 0).
        out.pop();
        let c = classic_bytes(c);
        put_uvarint(&mut out, 1);
        put_uvarint(&mut out, 0);
        put_uvarint(&mut out, c.len() as u64);
        out.extend_from_slice(&c);
    }
    out
}

fn member_fields(m: &MemberRecord) -> Vec<u8> {
    value(|v| {
        put_compact(v, m.instance_id.as_deref());
        put_compact(v, m.rack_id.as_deref());
        put_compact(v, Some(&m.client_id));
        put_compact(v, Some(&m.host));
        put_uvarint(v, m.topics.len() as u64 + 1);
        for t in &m.topics {
            put_compact(v, Some(t));
        }
        put_compact(v, m.regex.as_deref());
        put_compact(v, m.assignor.as_deref());
        v.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
    })
}

/// `TopicPartitions`: topic id, partitions; topics without an id now
/// (deleted) are left out.
fn put_partitions(v: &mut Vec<u8>, a: &Assignment, ids: &dyn Fn(&str) -> Option<TopicId>) {
    let known: Vec<(TopicId, &BTreeSet<i32>)> = a
        .iter()
        .filter(|(_, ps)| !ps.is_empty())
        .filter_map(|(t, ps)| ids(t).map(|id| (id, ps)))
        .collect();
    put_uvarint(v, known.len() as u64 + 1);
    for (id, ps) in known {
        v.extend_from_slice(&id.0);
        put_uvarint(v, ps.len() as u64 + 1);
        for p in ps {
            v.extend_from_slice(&p.to_be_bytes());
        }
        put_uvarint(v, 0);
    }
}

pub fn target_value(a: &Assignment, ids: &dyn Fn(&str) -> Option<TopicId>) -> Vec<u8> {
    value(|v| put_partitions(v, a, ids))
}

pub fn current_value(c: &CurrentRecord, ids: &dyn Fn(&str) -> Option<TopicId>) -> Vec<u8> {
    value(|v| {
        v.extend_from_slice(&c.epoch.to_be_bytes());
        v.extend_from_slice(&c.previous_epoch.to_be_bytes());
        v.push(c.state as u8);
        put_partitions(v, &c.assigned, ids);
        put_partitions(v, &c.revoking, ids);
    })
}

/// A cursor over untrusted bytes: every read checked.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.b.get(..n)?;
        self.b = self.b.get(n..)?;
        Some(head)
    }
    fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    /// A compact nullable string: `Some(None)` for null.
    fn compact(&mut self) -> Option<Option<String>> {
        match self.uvarint()? {
            0 => Some(None),
            n => {
                let n = usize::try_from(n - 1).ok()?;
                Some(Some(String::from_utf8(self.take(n)?.to_vec()).ok()?))
            }
        }
    }
    /// A compact array's length (null reads as empty).
    fn count(&mut self) -> Option<usize> {
        let n = self.uvarint()?.saturating_sub(1);
        // Each element takes a byte at least: a bogus count fails here, not
        // in an allocation.
        let n = usize::try_from(n).ok()?;
        (n <= self.b.len()).then_some(n)
    }
    fn partitions(&mut self, names: &dyn Fn(&TopicId) -> Option<String>) -> Option<Assignment> {
        let mut a = Assignment::new();
        for _ in 0..self.count()? {
            let id = TopicId(self.take(16)?.try_into().ok()?);
            let mut ps = BTreeSet::new();
            for _ in 0..self.count()? {
                ps.insert(self.i32()?);
            }
            self.tagged()?;
            // A topic deleted since: its partitions are no one's.
            if let Some(name) = names(&id) {
                a.entry(name).or_default().extend(ps);
            }
        }
        Some(a)
    }
    /// A compact (non-null) byte string.
    fn compact_bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::try_from(self.uvarint()?.checked_sub(1)?).ok()?;
        Some(self.take(n)?.to_vec())
    }
    /// `ClassicMemberMetadata`.
    fn classic(&mut self) -> Option<ClassicRecord> {
        let session_timeout_ms = self.i32()?;
        let mut protocols = Vec::new();
        for _ in 0..self.count()? {
            let name = self.compact()??;
            let meta = self.compact_bytes()?;
            self.tagged()?;
            protocols.push((name, meta));
        }
        self.tagged()?;
        Some(ClassicRecord {
            session_timeout_ms,
            protocols,
        })
    }
    /// Tagged fields, with `ClassicMemberMetadata` (tag 0) read, others skipped.
    fn member_tags(&mut self) -> Option<Option<ClassicRecord>> {
        let mut classic = None;
        for _ in 0..self.uvarint()? {
            let tag = self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).ok()?;
            let field = self.take(size)?;
            if tag == 0 {
                classic = Some(Reader { b: field }.classic()?);
            }
        }
        Some(classic)
    }
    /// Skip tagged fields.
    fn tagged(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            let _tag = self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).ok()?;
            self.take(size)?;
        }
        Some(())
    }
    /// A value of version 0 (a later one is not read: unknown layout).
    fn value(b: &'a [u8]) -> Option<Reader<'a>> {
        let mut r = Reader { b };
        (r.i16()? == 0).then_some(r)
    }
}

/// The group (and member) a key names.
pub fn parse_key(k: &[u8]) -> Option<(i16, String, Option<String>)> {
    let mut r = Reader { b: k };
    let version = r.i16()?;
    let group = r.string()?;
    let member = match version {
        MEMBER_METADATA | TARGET_MEMBER | CURRENT_ASSIGNMENT => Some(r.string()?),
        _ => None,
    };
    Some((version, group, member))
}

fn parse_epoch(v: &[u8]) -> Option<i32> {
    Reader::value(v)?.i32()
}

pub fn parse_member(v: &[u8]) -> Option<MemberRecord> {
    let mut r = Reader::value(v)?;
    let instance_id = r.compact()?;
    let rack_id = r.compact()?;
    let client_id = r.compact()?.unwrap_or_default();
    let host = r.compact()?.unwrap_or_default();
    let mut topics = Vec::new();
    for _ in 0..r.count()? {
        topics.push(r.compact()?.unwrap_or_default());
    }
    let regex = r.compact()?;
    let assignor = r.compact()?;
    let rebalance_timeout_ms = r.i32()?;
    // Records written before the classic members were kept end here.
    let classic = if r.b.is_empty() {
        None
    } else {
        r.member_tags()?
    };
    Some(MemberRecord {
        instance_id,
        rack_id,
        client_id,
        host,
        topics,
        regex,
        assignor,
        rebalance_timeout_ms,
        classic,
    })
}

fn parse_current(v: &[u8], names: &dyn Fn(&TopicId) -> Option<String>) -> Option<CurrentRecord> {
    let mut r = Reader::value(v)?;
    Some(CurrentRecord {
        epoch: r.i32()?,
        previous_epoch: r.i32()?,
        state: r.i8()?,
        assigned: r.partitions(names)?,
        revoking: r.partitions(names)?,
    })
}

/// Groups from the records of key versions 3, 5, 6, 7 and 8 (what
/// `OffsetStore::group_records` returns for each); records that do not
/// decode are skipped (`bad` counts them), a member without its metadata
/// record is left out.
pub fn read_groups(
    records: &[(Vec<u8>, Vec<u8>)],
    names: &dyn Fn(&TopicId) -> Option<String>,
    bad: &mut usize,
) -> BTreeMap<String, GroupRecord> {
    let mut groups: BTreeMap<String, GroupRecord> = BTreeMap::new();
    for (k, v) in records {
        let Some((version, group, member)) = parse_key(k) else {
            *bad += 1;
            continue;
        };
        let g = groups.entry(group).or_default();
        let ok = match (version, member) {
            (GROUP_METADATA, None) => parse_epoch(v).map(|e| g.epoch = e).is_some(),
            (TARGET_METADATA, None) => parse_epoch(v).map(|e| g.assignment_epoch = e).is_some(),
            (MEMBER_METADATA, Some(m)) => parse_member(v).map(|r| g.members.insert(m, r)).is_some(),
            (TARGET_MEMBER, Some(m)) => Reader::value(v)
                .and_then(|mut r| r.partitions(names))
                .map(|a| g.target.insert(m, a))
                .is_some(),
            (CURRENT_ASSIGNMENT, Some(m)) => parse_current(v, names)
                .map(|c| g.current.insert(m, c))
                .is_some(),
            _ => false,
        };
        if !ok {
            *bad += 1;
        }
    }
    for g in groups.values_mut() {
        let members: BTreeSet<String> = g.members.keys().cloned().collect();
        g.target.retain(|m, _| members.contains(m));
        g.current.retain(|m, _| members.contains(m));
    }
    groups
}

/// The records to write to go from `old` to `new`: changed or new keys
/// with their values, keys gone as tombstones.
pub fn diff(old: &Records, new: &Records) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    out.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_skipped() {
        let id = TopicId([7; 16]);
        let ids = |t: &str| (t == "t").then_some(id);
        let names = |i: &TopicId| (*i == id).then(|| "t".to_string());
        let mut a = Assignment::new();
        a.insert("t".into(), [0, 2].into_iter().collect());
        a.insert("gone".into(), [1].into_iter().collect());
        let m = MemberRecord {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            topics: vec!["t".into()],
            regex: None,
            assignor: Some("range".into()),
            rebalance_timeout_ms: 300_000,
            classic: None,
        };
        let c = CurrentRecord {
            epoch: 4,
            previous_epoch: 3,
            state: 1,
            assigned: a.clone(),
            revoking: Assignment::new(),
        };
        let records = vec![
            (key(GROUP_METADATA, "g", None), epoch_value(4)),
            (key(TARGET_METADATA, "g", None), epoch_value(4)),
            (key(MEMBER_METADATA, "g", Some("m")), member_value(&m)),
            (key(TARGET_MEMBER, "g", Some("m")), target_value(&a, &ids)),
            (
                key(CURRENT_ASSIGNMENT, "g", Some("m")),
                current_value(&c, &ids),
            ),
            // A target of a member without metadata, and garbage.
            (key(TARGET_MEMBER, "g", Some("x")), target_value(&a, &ids)),
            (key(CURRENT_ASSIGNMENT, "g", Some("y")), vec![0, 0, 1]),
            (vec![0, 5, 0xff], vec![]),
            (
                key(MEMBER_METADATA, "g", Some("z")),
                vec![0, 0, 0xff, 0xff, 0xff],
            ),
        ];
        let mut bad = 0;
        let groups = read_groups(&records, &names, &mut bad);
        assert_eq!(bad, 3);
        let g = &groups["g"];
        assert_eq!((g.epoch, g.assignment_epoch), (4, 4));
        assert_eq!(g.members.keys().collect::<Vec<_>>(), vec!["m"]);
        assert_eq!(g.members["m"], m);
        let mut known = Assignment::new();
        known.insert("t".into(), [0, 2].into_iter().collect());
        assert_eq!(g.target["m"], known);
        assert_eq!(g.current["m"].assigned, known);
        assert_eq!((g.current["m"].epoch, g.current["m"].state), (4, 1));
    }

    #[test]
    fn a_classic_member_round_trips_in_its_tagged_field() {
        let mut m = MemberRecord {
            client_id: "c".into(),
            topics: vec!["t".into()],
            rebalance_timeout_ms: 1000,
            classic: Some(ClassicRecord {
                session_timeout_ms: 6000,
                protocols: vec![
                    ("range".into(), vec![0, 1, 2]),
                    ("roundrobin".into(), vec![]),
                ],
            }),
            ..Default::default()
        };
        let bytes = member_value(&m);
        assert_eq!(parse_member(&bytes), Some(m.clone()));
        // The same record without the tag is the consumer-protocol form.
        let plain = member_fields(&m);
        m.classic = None;
        assert_eq!(parse_member(&plain), Some(m.clone()));
        assert_eq!(member_value(&m), plain);
        // Cut anywhere inside the tag: not understood, never a panic.
        for n in plain.len()..bytes.len() {
            assert_eq!(parse_member(&bytes[..n]), None, "cut at {n}");
        }
    }

    #[test]
    fn diff_writes_changes_and_tombstones() {
        let old: Records = [(vec![1], vec![1]), (vec![2], vec![2])]
            .into_iter()
            .collect();
        let new: Records = [(vec![1], vec![1]), (vec![3], vec![3])]
            .into_iter()
            .collect();
        assert_eq!(
            diff(&old, &new),
            vec![(vec![3], Some(vec![3])), (vec![2], None)]
        );
    }
}
