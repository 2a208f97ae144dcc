//! Codecs for the three request versions kafka-protocol 0.18 has no schema
//! for: OffsetCommit v10 and OffsetFetch v10 (KIP-848: topics named by
//! topic id instead of by name) and InitProducerId v6 (KIP-939:
//! `enable_2pc` and `keep_prepared_txn`; the ongoing transaction's producer
//! id and epoch in the answer). All three are flexible versions: compact
//! strings and arrays (length + 1 as an unsigned varint), a tagged-field
//! section after every structure (read and skipped; none are written).
//!
//! Decoding never trusts a length: every read checks what is left, and an
//! array's claimed count is bounded by the bytes left before anything is
//! allocated for it. Request encoders exist for the seed corpus and tests.

use bytes::{BufMut, BytesMut};
use uuid::Uuid;

/// A reader over a request body; every read fails cleanly at the end.
pub struct Reader<'a> {
    buf: &'a [u8],
}

type R<T> = Result<T, String>;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.buf.len() < n {
            return Err(format!(
                "{n} bytes wanted, {} left in the body",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn bool(&mut self) -> R<bool> {
        match self.array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("{b} is not a boolean")),
        }
    }

    pub fn i16(&mut self) -> R<i16> {
        self.array().map(i16::from_be_bytes)
    }

    pub fn i32(&mut self) -> R<i32> {
        self.array().map(i32::from_be_bytes)
    }

    pub fn i64(&mut self) -> R<i64> {
        self.array().map(i64::from_be_bytes)
    }

    pub fn uuid(&mut self) -> R<Uuid> {
        self.array().map(Uuid::from_bytes)
    }

    /// An unsigned varint of at most 32 bits, as Kafka writes lengths.
    pub fn uvarint(&mut self) -> R<u32> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.array::<1>()?[0];
            if i == 4 && b > 0x0f {
                return Err("varint longer than 32 bits".to_string());
            }
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 32 bits".to_string())
    }

    /// A compact array's count (None for a null array), no more than the
    /// bytes left divided by `min_size`, the smallest encoding of one element.
    pub fn count(&mut self, min_size: usize) -> R<Option<usize>> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        let n = (n - 1) as usize;
        if n.saturating_mul(min_size.max(1)) > self.buf.len() {
            return Err(format!(
                "an array of {n} elements in {} bytes",
                self.buf.len()
            ));
        }
        Ok(Some(n))
    }

    pub fn nullable_string(&mut self) -> R<Option<String>> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        let bytes = self.take((n - 1) as usize)?;
        std::str::from_utf8(bytes)
            .map(|s| Some(s.to_string()))
            .map_err(|e| format!("a string that is not UTF-8: {e}"))
    }

    pub fn string(&mut self) -> R<String> {
        self.nullable_string()?
            .ok_or_else(|| "a null string where one is required".to_string())
    }

    /// Skip a tagged-field section (none of these versions defines a tag).
    pub fn tags(&mut self) -> R<()> {
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }
}

/// Writers of the same primitives.
pub trait Put {
    fn uvarint(&mut self, v: u32);
    fn compact_len(&mut self, n: usize);
    fn nullable_string(&mut self, s: Option<&str>);
    fn string(&mut self, s: &str);
    fn no_tags(&mut self);
}

impl Put for BytesMut {
    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.put_u8(v as u8);
    }

    fn compact_len(&mut self, n: usize) {
        self.uvarint(u32::try_from(n).unwrap_or(u32::MAX - 1).saturating_add(1));
    }

    fn nullable_string(&mut self, s: Option<&str>) {
        match s {
            None => self.put_u8(0),
            Some(s) => {
                self.compact_len(s.len());
                self.put_slice(s.as_bytes());
            }
        }
    }

    fn string(&mut self, s: &str) {
        self.nullable_string(Some(s));
    }

    fn no_tags(&mut self) {
        self.put_u8(0);
    }
}

// ---------------------------------------------------------------- OffsetCommit

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OffsetCommitRequest10 {
    pub group_id: String,
    pub generation_id_or_member_epoch: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<CommitTopic10>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommitTopic10 {
    pub topic_id: Uuid,
    pub partitions: Vec<CommitPartition10>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommitPartition10 {
    pub partition_index: i32,
    pub committed_offset: i64,
    pub committed_leader_epoch: i32,
    pub committed_metadata: Option<String>,
}

impl OffsetCommitRequest10 {
    pub fn decode(r: &mut Reader<'_>) -> R<Self> {
        let group_id = r.string()?;
        let generation_id_or_member_epoch = r.i32()?;
        let member_id = r.string()?;
        let group_instance_id = r.nullable_string()?;
        let mut topics = Vec::new();
        // A topic: id (16), partitions (1), tags (1).
        for _ in 0..r.count(18)?.unwrap_or(0) {
            let topic_id = r.uuid()?;
            let mut partitions = Vec::new();
            // A partition: 4 + 8 + 4 + metadata (1) + tags (1).
            for _ in 0..r.count(18)?.unwrap_or(0) {
                partitions.push(CommitPartition10 {
                    partition_index: r.i32()?,
                    committed_offset: r.i64()?,
                    committed_leader_epoch: r.i32()?,
                    committed_metadata: r.nullable_string()?,
                });
                r.tags()?;
            }
            r.tags()?;
            topics.push(CommitTopic10 {
                topic_id,
                partitions,
            });
        }
        r.tags()?;
        Ok(OffsetCommitRequest10 {
            group_id,
            generation_id_or_member_epoch,
            member_id,
            group_instance_id,
            topics,
        })
    }

    pub fn encode(&self, b: &mut BytesMut) {
        b.string(&self.group_id);
        b.put_i32(self.generation_id_or_member_epoch);
        b.string(&self.member_id);
        b.nullable_string(self.group_instance_id.as_deref());
        b.compact_len(self.topics.len());
        for t in &self.topics {
            b.put_slice(t.topic_id.as_bytes());
            b.compact_len(t.partitions.len());
            for p in &t.partitions {
                b.put_i32(p.partition_index);
                b.put_i64(p.committed_offset);
                b.put_i32(p.committed_leader_epoch);
                b.nullable_string(p.committed_metadata.as_deref());
                b.no_tags();
            }
            b.no_tags();
        }
        b.no_tags();
    }
}

/// OffsetCommit v10's answer: per topic id, (partition, error code).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OffsetCommitResponse10 {
    pub throttle_time_ms: i32,
    pub topics: Vec<(Uuid, Vec<(i32, i16)>)>,
}

impl OffsetCommitResponse10 {
    pub fn encode(&self, b: &mut BytesMut) {
        b.put_i32(self.throttle_time_ms);
        b.compact_len(self.topics.len());
        for (id, partitions) in &self.topics {
            b.put_slice(id.as_bytes());
            b.compact_len(partitions.len());
            for (p, e) in partitions {
                b.put_i32(*p);
                b.put_i16(*e);
                b.no_tags();
            }
            b.no_tags();
        }
        b.no_tags();
    }
}

// ----------------------------------------------------------------- OffsetFetch

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OffsetFetchRequest10 {
    pub groups: Vec<FetchGroup10>,
    pub require_stable: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FetchGroup10 {
    pub group_id: String,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    /// None: every partition the group has committed.
    pub topics: Option<Vec<(Uuid, Vec<i32>)>>,
}

impl OffsetFetchRequest10 {
    pub fn decode(r: &mut Reader<'_>) -> R<Self> {
        let mut groups = Vec::new();
        // A group: id (1), member id (1), epoch (4), topics (1), tags (1).
        for _ in 0..r.count(8)?.unwrap_or(0) {
            let group_id = r.string()?;
            let member_id = r.nullable_string()?;
            let member_epoch = r.i32()?;
            let topics = match r.count(18)? {
                None => None,
                Some(n) => {
                    let mut ts = Vec::new();
                    for _ in 0..n {
                        let id = r.uuid()?;
                        let mut ps = Vec::new();
                        for _ in 0..r.count(4)?.unwrap_or(0) {
                            ps.push(r.i32()?);
                        }
                        r.tags()?;
                        ts.push((id, ps));
                    }
                    Some(ts)
                }
            };
            r.tags()?;
            groups.push(FetchGroup10 {
                group_id,
                member_id,
                member_epoch,
                topics,
            });
        }
        let require_stable = r.bool()?;
        r.tags()?;
        Ok(OffsetFetchRequest10 {
            groups,
            require_stable,
        })
    }

    pub fn encode(&self, b: &mut BytesMut) {
        b.compact_len(self.groups.len());
        for g in &self.groups {
            b.string(&g.group_id);
            b.nullable_string(g.member_id.as_deref());
            b.put_i32(g.member_epoch);
            match &g.topics {
                None => b.put_u8(0),
                Some(ts) => {
                    b.compact_len(ts.len());
                    for (id, ps) in ts {
                        b.put_slice(id.as_bytes());
                        b.compact_len(ps.len());
                        for p in ps {
                            b.put_i32(*p);
                        }
                        b.no_tags();
                    }
                }
            }
            b.no_tags();
        }
        b.put_u8(u8::from(self.require_stable));
        b.no_tags();
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FetchedPartition10 {
    pub partition_index: i32,
    pub committed_offset: i64,
    pub committed_leader_epoch: i32,
    pub metadata: Option<String>,
    pub error_code: i16,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FetchedGroup10 {
    pub group_id: String,
    pub topics: Vec<(Uuid, Vec<FetchedPartition10>)>,
    pub error_code: i16,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OffsetFetchResponse10 {
    pub throttle_time_ms: i32,
    pub groups: Vec<FetchedGroup10>,
}

impl OffsetFetchResponse10 {
    pub fn encode(&self, b: &mut BytesMut) {
        b.put_i32(self.throttle_time_ms);
        b.compact_len(self.groups.len());
        for g in &self.groups {
            b.string(&g.group_id);
            b.compact_len(g.topics.len());
            for (id, ps) in &g.topics {
                b.put_slice(id.as_bytes());
                b.compact_len(ps.len());
                for p in ps {
                    b.put_i32(p.partition_index);
                    b.put_i64(p.committed_offset);
                    b.put_i32(p.committed_leader_epoch);
                    b.nullable_string(p.metadata.as_deref());
                    b.put_i16(p.error_code);
                    b.no_tags();
                }
                b.no_tags();
            }
            b.put_i16(g.error_code);
            b.no_tags();
        }
        b.no_tags();
    }
}

// -------------------------------------------------------------- InitProducerId

#[derive(Clone, Debug, PartialEq)]
pub struct InitProducerIdRequest6 {
    pub transactional_id: Option<String>,
    pub transaction_timeout_ms: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub enable_2pc: bool,
    pub keep_prepared_txn: bool,
}

impl InitProducerIdRequest6 {
    pub fn decode(r: &mut Reader<'_>) -> R<Self> {
        let req = InitProducerIdRequest6 {
            transactional_id: r.nullable_string()?,
            transaction_timeout_ms: r.i32()?,
            producer_id: r.i64()?,
            producer_epoch: r.i16()?,
            enable_2pc: r.bool()?,
            keep_prepared_txn: r.bool()?,
        };
        r.tags()?;
        Ok(req)
    }

    pub fn encode(&self, b: &mut BytesMut) {
        b.nullable_string(self.transactional_id.as_deref());
        b.put_i32(self.transaction_timeout_ms);
        b.put_i64(self.producer_id);
        b.put_i16(self.producer_epoch);
        b.put_u8(u8::from(self.enable_2pc));
        b.put_u8(u8::from(self.keep_prepared_txn));
        b.no_tags();
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct InitProducerIdResponse6 {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The prepared transaction kept (KIP-939); -1 without one.
    pub ongoing_txn_producer_id: i64,
    pub ongoing_txn_producer_epoch: i16,
}

impl InitProducerIdResponse6 {
    pub fn encode(&self, b: &mut BytesMut) {
        b.put_i32(self.throttle_time_ms);
        b.put_i16(self.error_code);
        b.put_i64(self.producer_id);
        b.put_i16(self.producer_epoch);
        b.put_i64(self.ongoing_txn_producer_id);
        b.put_i16(self.ongoing_txn_producer_epoch);
        b.no_tags();
    }
}

/// Decode a whole body: what is left after the request must be nothing.
pub fn decode<T>(body: &[u8], f: impl FnOnce(&mut Reader<'_>) -> R<T>) -> R<T> {
    let mut r = Reader::new(body);
    let v = f(&mut r).map_err(|e| format!("bad request body: {e}"))?;
    if !r.buf.is_empty() {
        return Err(format!(
            "bad request body: {} bytes after its end",
            r.buf.len()
        ));
    }
    Ok(v)
}

/// A whole response frame: size, a flexible response header (correlation
/// id, no tags: these three APIs' v10/v6 use header v1), the body.
pub fn response_frame(correlation_id: i32, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    buf.no_tags();
    body(&mut buf);
    let n = i32::try_from(buf.len() - 4).unwrap_or(i32::MAX);
    buf[..4].copy_from_slice(&n.to_be_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    #[test]
    fn offset_commit_round_trips() {
        let req = OffsetCommitRequest10 {
            group_id: "g".into(),
            generation_id_or_member_epoch: 3,
            member_id: "m".into(),
            group_instance_id: Some("i".into()),
            topics: vec![CommitTopic10 {
                topic_id: id(7),
                partitions: vec![CommitPartition10 {
                    partition_index: 1,
                    committed_offset: 42,
                    committed_leader_epoch: 2,
                    committed_metadata: None,
                }],
            }],
        };
        let mut b = BytesMut::new();
        req.encode(&mut b);
        assert_eq!(decode(&b, OffsetCommitRequest10::decode), Ok(req));
    }

    #[test]
    fn offset_fetch_round_trips_null_and_listed_topics() {
        let req = OffsetFetchRequest10 {
            groups: vec![
                FetchGroup10 {
                    group_id: "a".into(),
                    member_id: None,
                    member_epoch: -1,
                    topics: None,
                },
                FetchGroup10 {
                    group_id: "b".into(),
                    member_id: Some("m".into()),
                    member_epoch: 4,
                    topics: Some(vec![(id(1), vec![0, 1, 2])]),
                },
            ],
            require_stable: true,
        };
        let mut b = BytesMut::new();
        req.encode(&mut b);
        assert_eq!(decode(&b, OffsetFetchRequest10::decode), Ok(req));
    }

    #[test]
    fn init_producer_id_round_trips() {
        let req = InitProducerIdRequest6 {
            transactional_id: Some("t".into()),
            transaction_timeout_ms: 60_000,
            producer_id: -1,
            producer_epoch: -1,
            enable_2pc: true,
            keep_prepared_txn: false,
        };
        let mut b = BytesMut::new();
        req.encode(&mut b);
        assert_eq!(decode(&b, InitProducerIdRequest6::decode), Ok(req));
    }

    #[test]
    fn huge_counts_and_truncations_are_refused_before_allocating() {
        // An OffsetFetch claiming 2^31 groups in 6 bytes.
        let body = [0xff, 0xff, 0xff, 0xff, 0x07, 0];
        assert!(decode(&body, OffsetFetchRequest10::decode).is_err());
        let mut b = BytesMut::new();
        OffsetCommitRequest10::default().encode(&mut b);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut], OffsetCommitRequest10::decode).is_err());
        }
        // Unknown tagged fields are skipped.
        let mut b = BytesMut::new();
        b.put_u8(0); // no groups
        b.put_u8(0); // require_stable
        b.put_slice(&[1, 5, 2, 9, 9]); // one tag, 5, two bytes
        assert!(decode(&b, OffsetFetchRequest10::decode).is_ok());
    }
}
