//! What a follower replica needs of the log (issue 14): batches appended as
//! the leader sent them, truncation (then reopen, and `kill -9` at each
//! step of it), and the high watermark apart from the log end.
//!
//! The crashes are real: the test binary runs itself as a child
//! ([`child_process`]) with `OTTLA_TRUNCATE_CRASH_AT` naming the step where
//! the child SIGKILLs itself.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ottla_record::batch::{BatchHeader, Batches, PRODUCER_ID};
use ottla_record::BatchBuilder;
use ottla_storage::beacon::Beacon;
use ottla_storage::config::TopicConfig;
use ottla_storage::log::{Durability, PartitionLog};
use ottla_storage::Error;

const CHILD_DIR: &str = "OTTLA_TEST_CHILD_DIR";

fn config() -> Arc<TopicConfig> {
    // Small segments: truncations cross segment boundaries.
    Arc::new(
        TopicConfig::from_overrides([
            ("retention.ms", "-1"),
            ("segment.bytes", "4096"),
            ("index.interval.bytes", "256"),
        ])
        .expect("config"),
    )
}

fn open(root: &Path, name: &str) -> PartitionLog {
    let beacon = Arc::new(Beacon::open(&root.join("beacon")).expect("beacon"));
    PartitionLog::open(&root.join(name), Arc::from("t"), 0, config(), beacon).expect("open")
}

/// A batch of `n` records of about 100 bytes, with a producer id.
fn batch(n: usize, pid: i64) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(256 * n);
    for i in 0..n {
        b.append(1_000 + i as i64, None, Some(&[b'v'; 100][..]), &[]);
    }
    let mut bytes = b.finish().to_vec();
    bytes[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    ottla_record::batch::seal_crc(&mut bytes);
    bytes
}

/// A leader log: 20 batches of 3 records in epoch 0, 20 in epoch 4.
fn leader(root: &Path) -> PartitionLog {
    let log = open(root, "leader");
    for (i, epoch) in [(0, 0), (20, 4)] {
        log.set_leader_epoch(epoch);
        for j in 0..20 {
            let mut b = batch(3, i + j);
            log.append(&mut b, Durability::PageCache).expect("append");
        }
    }
    log
}

/// Every byte of the log from its start to its end.
fn all_bytes(log: &PartitionLog) -> Vec<u8> {
    let end = log.log_end_offset().expect("end");
    let mut out = Vec::new();
    let mut next = log.offsets().expect("offsets").0;
    let mut cursor = None;
    while next < end {
        let f = log
            .read_to_log_end(next, 1 << 20, &mut cursor, true)
            .expect("read");
        assert!(f.error.is_none(), "{:?}", f.error);
        let last = Batches::new(&f.bytes).last().expect("a batch").0;
        next = last.next_offset();
        out.extend_from_slice(&f.bytes);
    }
    out
}

fn epochs(log: &PartitionLog) -> Vec<(i32, i64)> {
    log.leader_epochs()
        .expect("epochs")
        .cache
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    Batches::new(bytes).map(|(h, _)| h).collect()
}

/// Copy the leader's log to a new follower log, a few batches at a time.
fn follow(root: &Path, leader: &PartitionLog) -> PartitionLog {
    let f = open(root, "follower");
    let bytes = all_bytes(leader);
    let hs = headers(&bytes);
    let mut at = 0usize;
    for chunk in hs.chunks(7) {
        let len: usize = chunk.iter().map(|h| h.total_size()).sum();
        let info = f
            .append_as_follower(&bytes[at..at + len])
            .expect("follower append");
        assert_eq!(info.base_offset, chunk[0].base_offset);
        at += len;
    }
    f
}

#[test]
fn follower_append_keeps_offsets_epochs_and_producer_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = leader(dir.path());
    let f = follow(dir.path(), &l);
    assert_eq!(all_bytes(&f), all_bytes(&l), "byte-identical logs");
    assert_eq!(epochs(&f), vec![(0, 0), (4, 60)]);
    assert_eq!(epochs(&f), epochs(&l));
    assert_eq!(f.log_end_offset().expect("end"), 120);
    assert!(
        f.segment_count().expect("segments") > 1,
        "rolled as it went"
    );
    let hs = headers(&all_bytes(&f));
    assert_eq!(hs[25].producer_id, 25);
    assert_eq!(hs[25].leader_epoch, 4);
    assert_eq!(hs[25].base_offset, 75);

    // Not at the log end: refused whole, typed.
    let bytes = all_bytes(&l);
    let first = &bytes[..headers(&bytes)[0].total_size()];
    match f.append_as_follower(first) {
        Err(Error::UnexpectedAppendOffset {
            expected, first, ..
        }) => assert_eq!((expected, first), (120, 0)),
        other => panic!("expected UnexpectedAppendOffset, got {other:?}"),
    }
    // A damaged CRC: refused, nothing written.
    let mut more = batch(2, 99);
    ottla_record::batch::set_base_offset(&mut more, 120);
    ottla_record::batch::seal_crc(&mut more);
    let n = more.len();
    more[n - 1] ^= 0xff;
    assert!(matches!(
        f.append_as_follower(&more),
        Err(Error::InvalidRecord(_))
    ));
    assert_eq!(f.log_end_offset().expect("end"), 120);
    // Batches that do not continue each other: refused.
    let mut a = batch(2, 1);
    ottla_record::batch::set_base_offset(&mut a, 120);
    ottla_record::batch::seal_crc(&mut a);
    let mut b = batch(2, 1);
    ottla_record::batch::set_base_offset(&mut b, 123);
    ottla_record::batch::seal_crc(&mut b);
    let both = [a.clone(), b].concat();
    assert!(matches!(
        f.append_as_follower(&both),
        Err(Error::UnexpectedAppendOffset { .. })
    ));
    f.append_as_follower(&a).expect("a batch at the end");
    assert_eq!(f.log_end_offset().expect("end"), 122);
}

#[test]
fn truncate_to_drops_the_tail_and_its_epochs_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = leader(dir.path());
    let f = follow(dir.path(), &l);
    let before = f.segment_count().expect("segments");
    // Offset 50 is inside the batch 48..=50 (batches of 3): it goes whole.
    assert_eq!(f.truncate_to(50).expect("truncate"), 48);
    assert_eq!(f.log_end_offset().expect("end"), 48);
    assert_eq!(epochs(&f), vec![(0, 0)], "epoch 4 started past the cut");
    assert!(f.segment_count().expect("segments") < before);
    let kept = all_bytes(&f);
    let leader_bytes = all_bytes(&l);
    assert_eq!(&leader_bytes[..kept.len()], &kept[..]);
    // Appends continue at the cut (the new leader's records).
    let hs = headers(&leader_bytes);
    let at: usize = hs[..16].iter().map(|h| h.total_size()).sum();
    let len: usize = hs[16..30].iter().map(|h| h.total_size()).sum();
    f.append_as_follower(&leader_bytes[at..at + len])
        .expect("append after the cut");
    assert_eq!(f.log_end_offset().expect("end"), 90);
    assert_eq!(epochs(&f), vec![(0, 0), (4, 60)]);
    let expect = all_bytes(&f);
    drop(f);
    // Reopened: the same log, and the index finds every offset.
    let f = open(dir.path(), "follower");
    assert_eq!(f.log_end_offset().expect("end"), 90);
    assert_eq!(all_bytes(&f), expect);
    assert_eq!(epochs(&f), vec![(0, 0), (4, 60)]);
    for o in [0, 47, 48, 60, 89] {
        let r = f.read(o, 1, &mut None, true).expect("read");
        let h = headers(&r.bytes)[0];
        assert!(h.base_offset <= o && o <= h.last_offset(), "offset {o}");
    }
    // Past the end and below the start.
    assert_eq!(f.truncate_to(500).expect("no-op"), 90);
    assert_eq!(f.truncate_to(0).expect("to nothing"), 0);
    assert_eq!(f.offsets().expect("offsets"), (0, 0));
    assert_eq!(
        epochs(&f),
        vec![(0, 0)],
        "only the view of the current epoch"
    );
    drop(f);
    let f = open(dir.path(), "follower");
    assert_eq!(f.log_end_offset().expect("end"), 0);
    // Behind a leader whose log starts later: start again there.
    assert_eq!(f.truncate_fully_and_start_at(75).expect("start at"), 75);
    assert_eq!(f.offsets().expect("offsets"), (75, 75));
    let hs = headers(&leader_bytes);
    let at: usize = hs[..25].iter().map(|h| h.total_size()).sum();
    f.append_as_follower(&leader_bytes[at..])
        .expect("append from the leader's start");
    assert_eq!(f.offsets().expect("offsets"), (75, 120));
    drop(f);
    let f = open(dir.path(), "follower");
    assert_eq!(f.offsets().expect("offsets"), (75, 120));
    assert_eq!(all_bytes(&f), &leader_bytes[at..]);
}

#[test]
fn the_high_watermark_caps_reads_and_is_checkpointed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = leader(dir.path());
    assert_eq!(l.high_watermark().expect("hw"), 120, "unset: the log end");
    l.set_high_watermark(Some(30));
    assert_eq!(l.high_watermark().expect("hw"), 30);
    assert_eq!(l.offsets().expect("offsets"), (0, 30));
    let mut next = 0;
    let mut cursor = None;
    loop {
        let r = l.read(next, 1 << 20, &mut cursor, true).expect("read");
        assert_eq!(r.high_watermark, 30);
        let Some((h, _)) = Batches::new(&r.bytes).last() else {
            break;
        };
        assert!(h.next_offset() <= 30, "a batch above the high watermark");
        next = h.next_offset();
    }
    assert_eq!(next, 30);
    // Between the high watermark and the log end: nothing, no error.
    assert!(l
        .read(60, 1 << 20, &mut None, true)
        .expect("read")
        .bytes
        .is_empty());
    assert!(matches!(
        l.read(121, 1 << 20, &mut None, true),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // A follower's read goes to the log end.
    assert_eq!(headers(&all_bytes(&l)).len(), 40);
    // Never above the log end.
    l.set_high_watermark(Some(1_000));
    assert_eq!(l.high_watermark().expect("hw"), 120);
    assert_eq!(l.read_high_watermark_checkpoint().expect("read"), None);
    l.checkpoint_high_watermark(90).expect("checkpoint");
    assert_eq!(l.read_high_watermark_checkpoint().expect("read"), Some(90));
    l.truncate_to(60).expect("truncate");
    assert_eq!(l.read_high_watermark_checkpoint().expect("read"), Some(60));
    assert_eq!(l.high_watermark().expect("hw"), 60);
    l.set_high_watermark(None);
    assert!(!l.has_replicated_high_watermark());
}

/// Not a test of its own: the body of the child process the crash tests
/// start (it does nothing when run by the test harness directly).
#[test]
fn child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let f = open(Path::new(&dir), "follower");
    f.truncate_to(50).expect("truncate");
    // Reached only when the crash point did not fire.
    std::process::exit(3);
}

#[test]
fn kill_9_during_truncation_leaves_a_loadable_truncated_log() {
    for step in ["published", "unlinked"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (leader_bytes, kept) = {
            let l = leader(dir.path());
            let f = follow(dir.path(), &l);
            f.flush().expect("flush");
            let bytes = all_bytes(&l);
            let kept: usize = headers(&bytes)[..16].iter().map(|h| h.total_size()).sum();
            (bytes, kept)
        };
        let status = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "child_process", "--test-threads=1", "--quiet"])
            .env(CHILD_DIR, dir.path())
            .env("OTTLA_TRUNCATE_CRASH_AT", step)
            .status()
            .expect("run child");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "at {step}: {status:?}"
        );
        let f = open(dir.path(), "follower");
        assert_eq!(f.log_end_offset().expect("end"), 48, "at {step}");
        assert_eq!(all_bytes(&f), &leader_bytes[..kept], "at {step}");
        assert_eq!(epochs(&f), vec![(0, 0)], "at {step}");
        // And it takes the new leader's records at the cut.
        let hs = headers(&leader_bytes);
        let len: usize = hs[16..20].iter().map(|h| h.total_size()).sum();
        f.append_as_follower(&leader_bytes[kept..kept + len])
            .expect("append after the crash");
        assert_eq!(f.log_end_offset().expect("end"), 60);
    }
}

#[test]
fn a_reader_on_another_instance_never_reads_the_truncated_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = leader(dir.path());
    let f = follow(dir.path(), &l);
    // Another opener of the follower's directory (as another process).
    let reader = open(dir.path(), "follower");
    assert_eq!(all_bytes(&reader), all_bytes(&f));
    f.truncate_to(50).expect("truncate");
    assert_eq!(reader.log_end_offset().expect("end"), 48);
    assert!(matches!(
        reader.read(60, 1 << 20, &mut None, true),
        Err(Error::OffsetOutOfRange { .. })
    ));
    let kept = all_bytes(&reader);
    assert_eq!(kept, all_bytes(&f));
    assert!(headers(&kept).iter().all(|h| h.next_offset() <= 48));
    // Other records take the cut offsets: the reader sees them, whole.
    let mut other = Vec::new();
    for i in 0..4 {
        let mut b = batch(3, 1_000 + i);
        ottla_record::batch::set_base_offset(&mut b, 48 + 3 * i);
        b[ottla_record::batch::LEADER_EPOCH..ottla_record::batch::LEADER_EPOCH + 4]
            .copy_from_slice(&7i32.to_be_bytes());
        ottla_record::batch::seal_crc(&mut b);
        other.extend_from_slice(&b);
    }
    f.append_as_follower(&other).expect("append");
    assert_eq!(all_bytes(&reader), all_bytes(&f));
    assert_eq!(epochs(&reader), vec![(0, 0), (7, 48)]);
}
