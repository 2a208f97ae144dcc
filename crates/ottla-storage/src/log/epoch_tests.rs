//! Leader epochs on a partition log: the epoch stamped into appended
//! batches, the `leader-epoch-checkpoint` kept in step with appends, the log
//! start, recovery and other instances on the directory, and rebuilt from
//! the batches when it is missing or unreadable.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::leader_epoch::LEADER_EPOCH_FILE;
use super::{Durability, PartitionLog};
use ottla_record::batch::{BatchHeader, Batches, LEADER_EPOCH};
use ottla_record::BatchBuilder;

use super::tests::{config, open_log, part_dir};

/// A batch of `n` records whose header carries epoch -1, as a client's
/// batch does before a leader stamps it.
fn client_batch(n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(64 * n);
    for i in 0..n {
        b.append(
            1_000 + i as i64,
            None,
            Some(format!("v{i}").as_bytes()),
            &[],
        );
    }
    let mut bytes = b.finish().to_vec();
    bytes[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&(-1i32).to_be_bytes());
    bytes
}

fn append(log: &PartitionLog, n: usize) -> i64 {
    let mut b = client_batch(n);
    log.append(&mut b, Durability::PageCache)
        .expect("append")
        .base_offset
}

/// Every batch header from the log start on (checksums checked by the read).
fn stored_headers(log: &PartitionLog) -> Vec<BatchHeader> {
    let (start, end) = log.offsets().expect("offsets");
    let mut out: Vec<BatchHeader> = Vec::new();
    let mut next = start;
    let mut cursor = None;
    while next < end {
        let f = log.read(next, 1 << 20, &mut cursor, true).expect("read");
        assert!(f.error.is_none(), "{:?}", f.error);
        let hs: Vec<BatchHeader> = Batches::new(&f.bytes).map(|(h, _)| h).collect();
        next = hs.last().expect("a batch").next_offset();
        out.extend(hs);
    }
    out
}

fn checkpoint(root: &Path) -> String {
    std::fs::read_to_string(part_dir(root).join(LEADER_EPOCH_FILE)).expect("checkpoint")
}

fn entries(log: &PartitionLog) -> Vec<(i32, i64)> {
    log.leader_epochs()
        .expect("leader epochs")
        .cache
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

const F_CLEAN: u64 = 12 * 8;

fn crash_in_this_boot(root: &Path) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(part_dir(root).join("partition.head"))
        .expect("open head");
    f.write_all_at(&0u64.to_ne_bytes(), F_CLEAN)
        .expect("write head");
}

#[test]
fn appends_stamp_the_epoch_and_the_checkpoint_records_where_each_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    let log = open_log(tmp.path(), &cfg);
    // A new partition: the current epoch counts from the log end, and no
    // file is written until a batch is.
    let e = log.leader_epochs().expect("epochs");
    assert_eq!((e.current, e.end_offset_for(0)), (0, (0, 0)));
    assert!(!part_dir(tmp.path()).join(LEADER_EPOCH_FILE).exists());

    append(&log, 3);
    append(&log, 2);
    assert_eq!(checkpoint(tmp.path()), "0\n1\n0 0\n");
    log.set_leader_epoch(3);
    log.set_leader_epoch(2); // epochs only move up
    assert_eq!(log.leader_epoch(), 3);
    assert_eq!(append(&log, 4), 5);
    append(&log, 1);
    assert_eq!(checkpoint(tmp.path()), "0\n2\n0 0\n3 5\n");
    let epochs: Vec<i32> = stored_headers(&log)
        .iter()
        .map(|h| h.leader_epoch)
        .collect();
    assert_eq!(epochs, [0, 0, 3, 3]);

    let e = log.leader_epochs().expect("epochs");
    assert_eq!(e.log_end_offset, 10);
    assert_eq!(e.end_offset_for(0), (0, 5));
    assert_eq!(e.end_offset_for(1), (0, 5));
    assert_eq!(e.end_offset_for(3), (3, 10));
    assert_eq!(e.end_offset_for(4), (-1, -1));
    assert_eq!(e.end_offset_for(-1), (-1, -1));
    assert_eq!(e.epoch_for_offset(4), Some(0));
    assert_eq!(e.epoch_for_offset(5), Some(3));
    assert_eq!(e.epoch_at_log_start(), Some(0));

    // Reopened: the same cache from the file.
    drop(log);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(entries(&log), [(0, 0), (3, 5)]);
}

#[test]
fn another_instance_sees_a_new_epoch_through_the_head() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    let a = open_log(tmp.path(), &cfg);
    let b = open_log(tmp.path(), &cfg);
    append(&a, 2);
    assert_eq!(entries(&b), [(0, 0)]);
    b.set_leader_epoch(1);
    append(&b, 2);
    assert_eq!(entries(&a), [(0, 0), (1, 2)]);
    // `a`, still in epoch 0, appends in the log's latest epoch: a log's
    // epochs never go back.
    append(&a, 1);
    assert_eq!(entries(&b), [(0, 0), (1, 2)]);
    assert_eq!(checkpoint(tmp.path()), "0\n2\n0 0\n1 2\n");
    let epochs: Vec<i32> = stored_headers(&a).iter().map(|h| h.leader_epoch).collect();
    assert_eq!(epochs, [0, 1, 1]);
}

#[test]
fn moving_the_log_start_cuts_the_cache_from_the_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024")]);
    let log = open_log(tmp.path(), &cfg);
    for epoch in 0..3 {
        log.set_leader_epoch(epoch);
        for _ in 0..4 {
            append(&log, 5);
        }
    }
    assert_eq!(entries(&log), [(0, 0), (1, 20), (2, 40)]);
    log.delete_records(25).expect("delete records");
    assert_eq!(checkpoint(tmp.path()), "0\n2\n1 25\n2 40\n");
    let e = log.leader_epochs().expect("epochs");
    assert_eq!(e.epoch_at_log_start(), Some(1));
    // Below every epoch left: the requested epoch, ending where the first
    // one left starts.
    assert_eq!(e.end_offset_for(0), (0, 25));
    log.delete_records(50).expect("delete records");
    assert_eq!(checkpoint(tmp.path()), "0\n1\n2 50\n");

    // Retention by size moves the start to a segment base.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("retention.bytes", "1500")]);
    let log = open_log(tmp.path(), &cfg);
    for _ in 0..30 {
        append(&log, 5);
    }
    log.enforce_retention().expect("retention");
    let (start, _) = log.offsets().expect("offsets");
    assert!(start > 0);
    assert_eq!(checkpoint(tmp.path()), format!("0\n1\n0 {start}\n"));
}

#[test]
fn recovery_drops_epochs_past_the_recovered_end() {
    for full in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(&[]);
        {
            let log = open_log(tmp.path(), &cfg);
            append(&log, 4);
            log.set_leader_epoch(2);
            append(&log, 4);
        }
        // An append in epoch 5 that died after its entry was written and
        // before its batch was published; and one that never got further.
        std::fs::write(
            part_dir(tmp.path()).join(LEADER_EPOCH_FILE),
            "0\n4\n0 0\n2 4\n5 8\n6 12\n",
        )
        .expect("write checkpoint");
        if full {
            std::fs::remove_file(part_dir(tmp.path()).join("partition.head")).expect("rm head");
        } else {
            crash_in_this_boot(tmp.path());
        }
        let log = open_log(tmp.path(), &cfg);
        assert_eq!(checkpoint(tmp.path()), "0\n2\n0 0\n2 4\n", "full: {full}");
        assert_eq!(entries(&log), [(0, 0), (2, 4)]);
    }
}

#[test]
fn a_missing_or_malformed_checkpoint_is_rebuilt_from_the_batches() {
    for damage in ["missing", "garbage", "short"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(&[("segment.bytes", "1024")]);
        {
            let log = open_log(tmp.path(), &cfg);
            for epoch in [0, 4, 7] {
                log.set_leader_epoch(epoch);
                for _ in 0..3 {
                    append(&log, 5);
                }
            }
            log.delete_records(20).expect("delete records");
        }
        let path = part_dir(tmp.path()).join(LEADER_EPOCH_FILE);
        match damage {
            "missing" => std::fs::remove_file(&path).expect("rm"),
            "garbage" => std::fs::write(&path, b"\xff\x00junk").expect("write"),
            _ => std::fs::write(&path, "0\n3\n0 0\n").expect("write"),
        }
        let log = open_log(tmp.path(), &cfg);
        assert_eq!(entries(&log), [(4, 20), (7, 30)], "{damage}");
        assert_eq!(checkpoint(tmp.path()), "0\n2\n4 20\n7 30\n", "{damage}");
    }
}

#[test]
fn a_log_written_before_leader_epochs_counts_the_current_one_from_its_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    {
        let log = open_log(tmp.path(), &cfg);
        append(&log, 3);
        append(&log, 3);
    }
    // Batches as a broker without leader epochs stored them: epoch -1, no
    // checkpoint.
    let dir = part_dir(tmp.path());
    let seg = dir.join(format!("{:020}.log", 0));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .expect("segment");
    let len = f.metadata().expect("stat").len();
    let mut pos = 0u64;
    while pos < len {
        let mut h = [0u8; 61];
        f.read_exact_at(&mut h, pos).expect("header");
        f.write_all_at(&(-1i32).to_be_bytes(), pos + LEADER_EPOCH as u64)
            .expect("stamp");
        let size = BatchHeader::parse(&h).expect("header").total_size();
        pos += size as u64;
    }
    std::fs::remove_file(dir.join(LEADER_EPOCH_FILE)).expect("rm");

    let log = open_log(tmp.path(), &cfg);
    let e = log.leader_epochs().expect("epochs");
    assert_eq!(entries(&log), [(0, 6)]);
    assert_eq!(e.end_offset_for(0), (0, 6));
    // The first records have no epoch.
    assert_eq!(e.epoch_at_log_start(), None);
    assert_eq!(e.epoch_for_offset(0), None);
    assert!(!dir.join(LEADER_EPOCH_FILE).exists() || checkpoint(tmp.path()) == "0\n0\n");
    append(&log, 1);
    assert_eq!(checkpoint(tmp.path()), "0\n1\n0 6\n");
}

fn head_slot(root: &Path, slot: u64) -> u64 {
    let f = std::fs::File::open(part_dir(root).join("partition.head")).expect("open head");
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, slot * 8).expect("read head");
    u64::from_ne_bytes(b)
}

const F_BOOT_ID: u64 = 15 * 8;
const F_EPOCHS_DIRTY: u64 = 19;

#[test]
fn the_checkpoint_is_fsynced_with_the_next_flush() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    let log = open_log(tmp.path(), &cfg);
    append(&log, 2);
    assert_eq!(head_slot(tmp.path(), F_EPOCHS_DIRTY), 1);
    log.flush().expect("flush");
    assert_eq!(head_slot(tmp.path(), F_EPOCHS_DIRTY), 0);
    // An fsync'd append syncs it at once.
    log.set_leader_epoch(1);
    let mut b = client_batch(1);
    log.append(&mut b, Durability::Fsync).expect("append");
    assert_eq!(head_slot(tmp.path(), F_EPOCHS_DIRTY), 0);
    assert_eq!(checkpoint(tmp.path()), "0\n2\n0 0\n1 2\n");
}

#[test]
fn recovery_after_a_reboot_assigns_the_epochs_of_the_batches_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    {
        let log = open_log(tmp.path(), &cfg);
        append(&log, 4);
        log.set_leader_epoch(2);
        append(&log, 4);
        append(&log, 1);
    }
    // A power cut took the file's last replacement but not the batches.
    std::fs::write(part_dir(tmp.path()).join(LEADER_EPOCH_FILE), "0\n1\n0 0\n").expect("write");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(part_dir(tmp.path()).join("partition.head"))
        .expect("open head");
    f.write_all_at(&0u64.to_ne_bytes(), F_CLEAN).expect("clean");
    f.write_all_at(&0u64.to_ne_bytes(), F_BOOT_ID)
        .expect("boot");
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(checkpoint(tmp.path()), "0\n2\n0 0\n2 4\n");
    assert_eq!(entries(&log), [(0, 0), (2, 4)]);
}
