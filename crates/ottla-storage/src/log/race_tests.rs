//! A reader racing the writers of other processes: rolls, retention and
//! writers killed mid-append or mid-roll, each forced into the interleaving
//! that used to make a healthy log read as corrupt (or skip records).
//!
//! Two `PartitionLog`s on one directory behave like two processes (separate
//! descriptors, so the OFD locks exclude each other). A reader's head
//! snapshot can be stale by any amount, since readers take no lock;
//! `read_as_of` reads from a snapshot taken earlier, which is how these tests
//! put a whole retention pass between a reader's look at the head and its
//! look at the directory.

use std::path::{Path, PathBuf};

use super::{now_ms, Durability, PartitionLog};
use crate::error::Error;
use ottla_record::batch::Batches;
use ottla_record::BatchBuilder;

use super::tests::{config, open_log, part_dir};

/// A batch of `n` records valued `"{tag}-{i}"`.
fn batch(n: usize, tag: &str) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(64 * n);
    for i in 0..n {
        let value = format!("{tag}-{i}");
        b.append(now_ms(), None, Some(value.as_bytes()), &[]);
    }
    b.finish().to_vec()
}

fn append(log: &PartitionLog, n: usize, tag: &str) -> (i64, i64) {
    let mut b = batch(n, tag);
    let info = log.append(&mut b, Durability::PageCache).expect("append");
    (info.base_offset, info.last_offset)
}

/// Segment `.log` files by base offset.
fn segment_bases(root: &Path) -> Vec<i64> {
    let mut out: Vec<i64> = std::fs::read_dir(part_dir(root))
        .expect("list partition")
        .filter_map(|e| {
            let name = e.expect("entry").file_name();
            let name = name.to_str()?.to_string();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// Append 3-record batches tagged "w0", "w1", ... until the partition has
/// `segments` segment files; returns the next tag number.
fn append_until_segments(log: &PartitionLog, root: &Path, segments: usize) -> usize {
    let mut i = 0;
    while segment_bases(root).len() < segments {
        append(log, 3, &format!("w{i}"));
        i += 1;
    }
    i
}

fn segment_file(root: &Path, base: i64) -> PathBuf {
    part_dir(root).join(super::segment::log_file_name(base))
}

/// Every offset from `from` to the high watermark, read sequentially with a
/// cursor, checking there are no gaps, no duplicates and no error.
fn read_offsets(log: &PartitionLog, from: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut next = from;
    let mut cursor = None;
    loop {
        let f = log.read(next, 1024, &mut cursor, true).expect("read");
        assert!(
            f.error.is_none(),
            "healthy log read as corrupt: {:?}",
            f.error
        );
        if f.bytes.is_empty() {
            assert_eq!(
                next, f.high_watermark,
                "empty read below the high watermark"
            );
            return out;
        }
        for (h, _) in Batches::new(&f.bytes) {
            assert_eq!(h.base_offset, next, "offsets skipped or repeated");
            out.extend(h.base_offset..h.next_offset());
            next = h.next_offset();
        }
    }
}

/// The flake of `test_reader_follows_two_writer_processes_with_retention`:
/// the reader takes a head snapshot (log start `s`), a writer's retention
/// pass publishes a later start and unlinks the segment holding `s`, and
/// only then does the reader list the directory for its stale snapshot. The
/// segment it wants is gone; it used to start reading at the first segment
/// left, whose first batch does not continue the log at `s`, and report
/// "batch offsets ... do not continue the log": `CorruptRecordError` on a
/// healthy log. Retention moved the log start past `s`, so the answer is
/// Kafka's: offset out of range, with the start as it is now.
#[test]
fn segment_deleted_by_retention_after_the_readers_snapshot_is_out_of_range() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("retention.bytes", "3072")]);
    let writer = open_log(tmp.path(), &cfg);
    let reader = open_log(tmp.path(), &cfg);
    let mut i = append_until_segments(&writer, tmp.path(), 3);
    let stale = reader.state().expect("head");
    let position = stale.log_start_offset;
    // Retention deletes the segment holding `position` (and more).
    while writer.offsets().expect("offsets").0 <= position {
        append(&writer, 3, &format!("w{i}"));
        i += 1;
    }
    assert!(!segment_file(tmp.path(), position).exists());
    let (start, end) = writer.offsets().expect("offsets");
    match reader.read_as_of(stale, position, 4096, &mut None, true) {
        Err(Error::OffsetOutOfRange {
            offset,
            start: s,
            end: e,
            ..
        }) => {
            assert_eq!((offset, s, e), (position, start, end));
        }
        other => panic!("expected offset out of range, got {other:?}"),
    }
    // A fresh read from the new start reads everything that is left.
    let offsets = read_offsets(&reader, start);
    assert_eq!(offsets, (start..end).collect::<Vec<_>>());
}

/// The same race one segment in: the reader's stale snapshot names a
/// position in the second-oldest segment, and both the oldest and that one
/// are gone by the time it lists the directory, while later ones remain.
#[test]
fn reader_never_reads_a_gap_left_by_a_concurrent_retention_pass() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("retention.bytes", "2048")]);
    let writer = open_log(tmp.path(), &cfg);
    let reader = open_log(tmp.path(), &cfg);
    let mut i = 0;
    for round in 0..30 {
        append(&writer, 3, &format!("w{i}"));
        i += 1;
        // A snapshot, then enough appends for retention to pass it by.
        let stale = reader.state().expect("head");
        let position = (stale.log_start_offset + (round % 7) as i64).min(stale.next_offset - 1);
        while writer.offsets().expect("offsets").0 <= position {
            append(&writer, 1 + i % 4, &format!("w{i}"));
            i += 1;
        }
        match reader.read_as_of(stale, position, 4096, &mut None, true) {
            Err(Error::OffsetOutOfRange { start, .. }) => assert!(start > position),
            Ok(f) => {
                // Read through a segment it still had open: the very
                // batches, in order, starting at the position.
                assert!(
                    f.error.is_none(),
                    "healthy log read as corrupt: {:?}",
                    f.error
                );
                let first = Batches::new(&f.bytes).next().expect("a batch").0;
                assert!(first.base_offset <= position && position < first.next_offset());
            }
            Err(e) => panic!("round {round}: {e:?}"),
        }
    }
}

/// A writer killed in the middle of an append leaves bytes past the head's
/// `active_size` (never published, never acknowledged). Another process,
/// still appending (so no loader runs), writes over their start and then
/// rolls: the closed segment must end where the head said, or every reader
/// takes the dead writer's bytes for a corrupt batch at its end.
#[test]
fn unpublished_bytes_of_a_killed_writer_do_not_survive_a_roll() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "2048")]);
    let killed = open_log(tmp.path(), &cfg);
    let survivor = open_log(tmp.path(), &cfg);
    append(&killed, 3, "a");
    let active = segment_file(tmp.path(), 0);
    // The torn append: most of a segment of bytes the head never covered.
    let torn = {
        let mut b = batch(200, "torn");
        assert!(b.len() > 1500);
        b.truncate(1500);
        b
    };
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .expect("open segment");
        f.write_all(&torn).expect("write torn append");
    }
    drop(killed);
    append(&survivor, 2, "b");
    // Larger than what is left of the segment: rolls, with most of the dead
    // writer's bytes still past the survivor's last batch.
    let (big, _) = append(&survivor, 150, "big");
    assert_eq!(segment_bases(tmp.path()), vec![0, big]);
    append(&survivor, 3, "c");
    let (_, end) = survivor.offsets().expect("offsets");
    assert_eq!(read_offsets(&survivor, 0), (0..end).collect::<Vec<_>>());
    let reader = open_log(tmp.path(), &cfg);
    assert_eq!(read_offsets(&reader, 0), (0..end).collect::<Vec<_>>());
}

/// A writer killed in the middle of a roll leaves the new segment's file,
/// at the base offset it meant to start, unpublished. If another process
/// then appends to the still-active segment without rolling (its batch
/// fits), those offsets are past the stray file's base; when it rolls later,
/// the stray must not become a closed segment that readers take as holding
/// them (they skipped straight past them to the next segment).
#[test]
fn stray_segment_of_a_killed_roll_does_not_hide_later_appends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "2048")]);
    let survivor = open_log(tmp.path(), &cfg);
    append(&survivor, 3, "a");
    let (_, next) = survivor.offsets().expect("offsets");
    // What a roll that died before publishing the head leaves behind.
    let stray = segment_file(tmp.path(), next);
    std::fs::write(&stray, b"").expect("stray segment");
    std::fs::write(stray.with_extension("index"), vec![0u8; 1024]).expect("stray index");
    std::fs::write(stray.with_extension("timeindex"), vec![0u8; 1020]).expect("stray index");
    let mut i = 0;
    while survivor.state().expect("head").active_base <= next {
        append(&survivor, 3, &format!("b{i}"));
        i += 1;
    }
    append(&survivor, 3, "c");
    let (_, end) = survivor.offsets().expect("offsets");
    assert_eq!(read_offsets(&survivor, 0), (0..end).collect::<Vec<_>>());
    let reader = open_log(tmp.path(), &cfg);
    assert_eq!(read_offsets(&reader, 0), (0..end).collect::<Vec<_>>());
    for o in [next, next + 1, end - 1] {
        let f = reader.read(o, 1, &mut None, true).expect("read");
        let h = Batches::new(&f.bytes).next().expect("a batch").0;
        assert!(
            h.base_offset <= o && o < h.next_offset(),
            "read at {o} gave {h:?}"
        );
    }
}

/// A topic deleted while a reader is in its files: deletion flags the head,
/// then removes the files, so a reader listing the directory halfway meets
/// the same kind of hole. It is told the partition is gone, not that the
/// log is corrupt.
#[test]
fn reader_of_a_partition_deleted_under_it_is_told_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024")]);
    let writer = open_log(tmp.path(), &cfg);
    let reader = open_log(tmp.path(), &cfg);
    append_until_segments(&writer, tmp.path(), 3);
    let stale = reader.state().expect("head");
    writer.mark_deleted();
    // Halfway through removing the files.
    super::partition::remove_segment_files(&segment_file(tmp.path(), 0));
    match reader.read_as_of(stale, 0, 4096, &mut None, true) {
        Err(Error::UnknownTopicOrPartition { .. }) => {}
        other => panic!("expected unknown topic or partition, got {other:?}"),
    }
}

/// A writer killed in the middle of a head update leaves it torn (its
/// seqlock odd); the next lock holder in a live process repairs it from
/// the files. The closed segments are whole (same boot, the page cache kept
/// them), so the repair must leave their files alone: re-validating them
/// reopened them for appending and grew their index files to full size for
/// a while, and a reader mapping one then kept a zero-padded time index
/// whose last entry (timestamp 0) made the segment look expired.
#[test]
fn repair_of_a_torn_head_under_live_readers_leaves_closed_segments_alone() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("index.interval.bytes", "64")]);
    let writer = open_log(tmp.path(), &cfg);
    let reader = open_log(tmp.path(), &cfg);
    append_until_segments(&writer, tmp.path(), 4);
    let closed: Vec<PathBuf> = {
        let bases = segment_bases(tmp.path());
        bases[..bases.len() - 1]
            .iter()
            .flat_map(|b| {
                let log = segment_file(tmp.path(), *b);
                [log.with_extension("index"), log.with_extension("timeindex")]
            })
            .collect()
    };
    let stamp = |p: &PathBuf| {
        let m = std::fs::metadata(p).expect("stat index");
        (m.len(), m.modified().expect("mtime"))
    };
    let before: Vec<_> = closed.iter().map(stamp).collect();
    // Torn: the seqlock left odd, as by a writer killed inside `Head::write`.
    let head = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(part_dir(tmp.path()).join("partition.head"))
        .expect("open head");
    let mut seq = [0u8; 8];
    head.read_exact_at(&mut seq, 8).expect("read seq");
    let seq = u64::from_ne_bytes(seq) | 1;
    head.write_all_at(&seq.to_ne_bytes(), 8).expect("tear head");
    append(&writer, 2, "after");
    let after: Vec<_> = closed.iter().map(stamp).collect();
    assert_eq!(before, after, "closed segments' indexes were rewritten");
    let (start, end) = reader.offsets().expect("offsets");
    assert_eq!(
        read_offsets(&reader, start),
        (start..end).collect::<Vec<_>>()
    );
}
