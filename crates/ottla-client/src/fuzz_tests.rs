//! Deterministic fuzzing in `cargo test`: every oracle of
//! [`crate::fuzzing`] replayed on thousands of mutated and truncated valid
//! inputs from a fixed seed, plus the log's valid-prefix and error-naming
//! promises checked against a log whose contents are known, and the
//! regression inputs of every crash the fuzzers found.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::fuzzing::{self, open_partition, read_all, Rng, ScratchDir};
use ottla_record::batch::{BatchBuilder, Batches, BASE_OFFSET, BATCH_LENGTH};
use ottla_storage::error::Error;

// ------------------------------------------------------------- helpers

/// One to four of the mutations libFuzzer's default mutator makes most.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len());
        match rng.below(8) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = rng.next_u64() as u8,
            2 => v.truncate(at),
            3 => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            4 => {
                let n = rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(at..at, bytes);
            }
            5 if v.len() >= at + 4 => {
                let edge = [0i32, -1, 1, i32::MAX, i32::MIN, 0x7f, 0x80][rng.below(7)];
                v[at..at + 4].copy_from_slice(&edge.to_be_bytes());
            }
            6 if v.len() >= at + 8 => {
                let edge = [0i64, -1, i64::MAX, i64::MIN][rng.below(4)];
                v[at..at + 8].copy_from_slice(&edge.to_be_bytes());
            }
            7 if !v.is_empty() => {
                let end = (at + rng.below(32)).min(v.len());
                let chunk = v[at..end].to_vec();
                let to = rng.below(v.len());
                v.splice(to..to, chunk);
            }
            _ => v[..].reverse(),
        }
    }
    v
}

thread_local! {
    static LARGEST_ALLOC: Cell<usize> = const { Cell::new(0) };
}

/// Records the largest single allocation each thread makes, so a test can
/// assert that no length read from the input sized a buffer.
struct CountingAlloc;

// The process allocator the counting one stands in front of.
use std::alloc::System as Base;

// SAFETY: every call is forwarded to `Base` unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        unsafe { Base.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `Base` through this allocator, with `layout`.
        unsafe { Base.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on unchanged.
        unsafe { Base.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from `Base` through this allocator, with `layout`.
        unsafe { Base.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown are not ours to count.
    let _ = LARGEST_ALLOC.try_with(|m| m.set(m.get().max(size)));
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Run `f`, returning the largest single allocation it made on this thread.
fn largest_alloc(f: impl FnOnce()) -> usize {
    LARGEST_ALLOC.with(|m| m.set(0));
    f();
    LARGEST_ALLOC.with(Cell::get)
}

/// Replay `oracle` on `iterations` mutants of the seeds for `target`,
/// checking that no allocation outgrows the input by more than `slack`.
fn replay(target: &str, iterations: usize, seed: u64, slack: usize, oracle: fn(&[u8])) {
    let seeds: Vec<Vec<u8>> = fuzzing::seed_corpus()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, b)| b)
        .collect();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let mut rng = Rng(seed);
    for seed in &seeds {
        oracle(seed);
    }
    for i in 0..iterations {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let biggest = largest_alloc(|| oracle(&input));
        assert!(
            biggest <= 4 * input.len() + slack,
            "{target}: a {}-byte input made a {biggest}-byte allocation",
            input.len()
        );
    }
}

// ------------------------------------------------------------- replays

#[test]
fn record_batch_survives_mutation() {
    replay(
        "record_batch",
        6000,
        0x0e11_a001,
        4096,
        fuzzing::record_batch,
    );
}

#[test]
fn varint_survives_mutation() {
    replay("varint", 3000, 0x0e11_a002, 256, fuzzing::varint);
}

#[test]
fn offsets_key_value_survive_mutation() {
    replay("offsets_kv", 4000, 0x0e11_a003, 256, fuzzing::offsets_kv);
}

#[test]
fn txn_state_key_value_survive_mutation() {
    replay(
        "txn_state_kv",
        4000,
        0x0e11_a00b,
        256,
        fuzzing::txn_state_kv,
    );
}

#[test]
fn topic_meta_survives_mutation() {
    replay("topic_meta", 4000, 0x0e11_a004, 4096, fuzzing::topic_meta);
}

#[test]
fn group_state_survives_mutation() {
    replay("group_state", 4000, 0x0e11_a005, 4096, fuzzing::group_state);
}

#[test]
fn append_survives_mutation() {
    replay("append", 1500, 0x0e11_a008, 1 << 16, fuzzing::append);
}

#[test]
fn index_files_survive_mutation() {
    replay(
        "index_files",
        1500,
        0x0e11_a006,
        1 << 16,
        fuzzing::index_files,
    );
}

#[test]
fn partition_directory_survives_mutation() {
    // Opening a partition maps 1 KiB indexes and reads through a window of
    // at most the file; nothing may scale with a length inside the bytes.
    replay("log_dir", 2000, 0x0e11_a007, 1 << 16, fuzzing::log_dir);
}

// ------------------------------------------------------------- the log

/// A partition of several segments with known contents; returns the
/// batches as written (offsets stamped), in log order, and the segment
/// files as (path, [(position, batch index)]).
type SegmentLayout = Vec<(std::path::PathBuf, Vec<(u64, usize)>)>;

fn write_known_log(root: &Path) -> (Vec<Vec<u8>>, SegmentLayout) {
    let cfg = std::sync::Arc::new(
        ottla_storage::config::TopicConfig::from_overrides([
            ("retention.ms", "-1"),
            ("segment.bytes", "900"),
            ("segment.index.bytes", "1024"),
            ("index.interval.bytes", "64"),
        ])
        .expect("config"),
    );
    let log = open_partition(root, &cfg).expect("open");
    for i in 0..30usize {
        let mut b = BatchBuilder::with_capacity(128);
        for j in 0..(i % 3 + 1) {
            let v = format!("v{i}.{j}");
            b.append(1000 + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
        }
        let mut bytes = b.finish().to_vec();
        log.append(&mut bytes, ottla_storage::log::Durability::PageCache)
            .expect("append");
    }
    let (all, err) = read_all(&log);
    assert!(err.is_none());
    drop(log);
    let batches: Vec<Vec<u8>> = Batches::new(&all).map(|(_, b)| b.to_vec()).collect();
    assert_eq!(batches.len(), 30);
    let dir = root.join("t-0");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();
    assert!(names.len() >= 3, "want several segments");
    let mut layout = Vec::new();
    let mut k = 0;
    for p in names {
        let bytes = std::fs::read(&p).expect("read segment");
        let mut pos = 0;
        let mut here = Vec::new();
        for (_, b) in Batches::new(&bytes) {
            assert_eq!(b, &batches[k][..]);
            here.push((pos, k));
            pos += b.len() as u64;
            k += 1;
        }
        layout.push((p, here));
    }
    (batches, layout)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// Damage one byte (or cut the file) anywhere in any segment, lose the
/// head as a crash before any flush would, and recover: the log must be
/// exactly the batches before the damaged one, byte for byte.
#[test]
fn recovery_keeps_exactly_the_valid_prefix() {
    let golden = ScratchDir::new("golden");
    let (batches, layout) = write_known_log(golden.path());
    let mut rng = Rng(0x0e11_b001);
    for trial in 0..400 {
        let scratch = ScratchDir::new("prefix");
        copy_dir(&golden.path().join("t-0"), &scratch.path().join("t-0"));
        let (path, here) = &layout[rng.below(layout.len())];
        let path = scratch
            .path()
            .join("t-0")
            .join(path.file_name().expect("name"));
        let size = std::fs::metadata(&path).expect("stat").len();
        let at = rng.below(size as usize) as u64;
        // The first batch touched by the damage: everything before survives.
        let (bpos, first_bad) = *here
            .iter()
            .rev()
            .find(|(p, _)| *p <= at)
            .expect("a batch at or before the damage");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let cut = trial % 3 == 0;
        if cut {
            f.set_len(at).expect("truncate");
        } else {
            let mut b = [0u8];
            f.read_at(&mut b, at).expect("read");
            let rel = at - bpos;
            // Bytes 12..16 (leader epoch) are outside the CRC by design and
            // carry no data the reader returns; damage them elsewhere.
            let flip = if (12..16).contains(&rel) {
                0
            } else {
                1u8 << rng.below(8)
            };
            f.write_all_at(&[b[0] ^ flip], at).expect("write");
            if flip == 0 {
                continue;
            }
        }
        std::fs::remove_file(scratch.path().join("t-0/partition.head")).expect("rm head");
        let log = open_partition(scratch.path(), &fuzzing::small_config()).expect("recover");
        let (got, err) = read_all(&log);
        assert!(err.is_none(), "trial {trial}: {err:?}");
        let want: Vec<u8> = batches[..first_bad].concat();
        // A cut exactly at a batch boundary keeps that batch out too.
        assert!(
            got == want,
            "trial {trial}: damage at {at} of {}: got {} bytes, want {}",
            path.display(),
            got.len(),
            want.len()
        );
    }
}

/// The same damage under a clean head (no recovery runs): reads return the
/// batches before it unchanged, then an error naming the segment file and
/// the damaged batch's position.
#[test]
fn corruption_under_a_clean_head_names_file_and_position() {
    let golden = ScratchDir::new("golden-clean");
    let (batches, layout) = write_known_log(golden.path());
    let mut rng = Rng(0x0e11_b002);
    for trial in 0..200 {
        let scratch = ScratchDir::new("clean");
        copy_dir(&golden.path().join("t-0"), &scratch.path().join("t-0"));
        let seg = rng.below(layout.len());
        let (path, here) = &layout[seg];
        let path = scratch
            .path()
            .join("t-0")
            .join(path.file_name().expect("name"));
        let (bpos, k) = here[rng.below(here.len())];
        let len = batches[k].len() as u64;
        // Anywhere in the checksummed part or the length field.
        let rel = match rng.below(3) {
            0 => BATCH_LENGTH as u64 + rng.below(4) as u64,
            _ => 21 + rng.below((len - 21) as usize) as u64,
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let mut b = [0u8];
        f.read_at(&mut b, bpos + rel).expect("read");
        f.write_all_at(&[b[0] ^ (1 << rng.below(8))], bpos + rel)
            .expect("write");
        let log = open_partition(scratch.path(), &fuzzing::small_config()).expect("open");
        let (got, err) = read_all(&log);
        let want: Vec<u8> = batches[..k].concat();
        assert!(
            got == want,
            "trial {trial}: prefix before batch {k} changed"
        );
        match err {
            Some(Error::CorruptRecord {
                path: p, position, ..
            }) => {
                assert_eq!(p, path, "trial {trial}");
                assert_eq!(position, bpos, "trial {trial}");
            }
            // A damaged length in the active segment's last index interval
            // makes the head disagree with the file, so the loader recovers
            // (cutting the log where the error would have been) instead.
            None if seg + 1 == layout.len() => {}
            other => panic!("trial {trial}: want a CorruptRecord error, got {other:?}"),
        }
    }
}

/// A length prefix of 2 GiB in a small segment costs no 2 GiB buffer, on
/// recovery or on read.
#[test]
fn huge_batch_length_allocates_nothing_big() {
    let golden = ScratchDir::new("huge");
    let (batches, layout) = write_known_log(golden.path());
    let (path, here) = &layout[0];
    let (bpos, k) = here[1];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.write_all_at(&i32::MAX.to_be_bytes(), bpos + BATCH_LENGTH as u64)
        .expect("write");
    drop(f);
    let biggest = largest_alloc(|| {
        let log = open_partition(golden.path(), &fuzzing::small_config()).expect("open");
        let (got, err) = read_all(&log);
        assert!(got == batches[..k].concat());
        assert!(matches!(err, Some(Error::CorruptRecord { position, .. }) if position == bpos));
    });
    assert!(biggest < 4 << 20, "allocated {biggest} bytes");
}

// ------------------------------------------------------------- regressions

#[test]
fn regression_base_offset_near_i64_max_is_rejected_not_overflowed() {
    let mut b = BatchBuilder::with_capacity(64);
    b.append(1, None, Some(b"v"), &[]);
    b.append(2, None, Some(b"w"), &[]);
    let mut bytes = b.finish().to_vec();
    // The base offset sits outside the CRC, so damage there passes it.
    bytes[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&i64::MAX.to_be_bytes());
    assert!(ottla_record::check_batch(&bytes).is_err());
    fuzzing::record_batch(&bytes);
    let mut input = vec![0u8];
    input.extend_from_slice(&bytes);
    fuzzing::log_dir(&input);
}

/// Damage one byte of `partition.head` (after a clean close) or of an
/// index file: no record may be lost or changed, and nothing may panic.
#[test]
fn damaged_head_or_index_loses_nothing() {
    let golden = ScratchDir::new("golden-head");
    let (batches, layout) = write_known_log(golden.path());
    let all = batches.concat();
    let mut rng = Rng(0x0e11_b003);
    let mut files = vec![golden.path().join("t-0/partition.head")];
    for (p, _) in &layout {
        files.push(p.with_extension("index"));
        files.push(p.with_extension("timeindex"));
    }
    for trial in 0..300 {
        let scratch = ScratchDir::new("head");
        copy_dir(&golden.path().join("t-0"), &scratch.path().join("t-0"));
        let pick = if trial % 2 == 0 {
            0
        } else {
            rng.below(files.len())
        };
        let path = scratch
            .path()
            .join("t-0")
            .join(files[pick].file_name().expect("name"));
        let size = std::fs::metadata(&path).expect("stat").len();
        if size == 0 {
            continue;
        }
        // The head's fields live in its first 17 slots of 8 bytes.
        let at = if pick == 0 {
            rng.below(17 * 8)
        } else {
            rng.below(size as usize)
        } as u64;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let mut b = [0u8];
        f.read_at(&mut b, at).expect("read");
        f.write_all_at(&[b[0] ^ (1 << rng.below(8))], at)
            .expect("write");
        drop(f);
        let log = open_partition(scratch.path(), &fuzzing::small_config()).expect("open");
        // Damage to the seqlock counter or the clean flag only changes how
        // the head is trusted; damage to the log start hides a prefix on
        // purpose-looking terms (it is a valid value): read from offset 0.
        let (got, err) = read_all(&log);
        assert!(err.is_none(), "trial {trial} ({}): {err:?}", path.display());
        let (start, end) = log.offsets().expect("offsets");
        let skipped: usize = batches
            .iter()
            .take_while(|b| {
                Batches::new(b)
                    .next()
                    .is_some_and(|(h, _)| h.next_offset() <= start)
            })
            .map(Vec::len)
            .sum();
        assert_eq!(end, 60, "trial {trial}: log end moved");
        assert!(
            got == all[skipped..],
            "trial {trial}: damage at byte {at} of {} changed the log",
            path.display()
        );
        // Every offset looked up on its own (through the offset index)
        // starts at the batch that holds it.
        for offset in start..end {
            let f = log
                .read(offset, 1, &mut None, true)
                .unwrap_or_else(|e| panic!("trial {trial}: read {offset}: {e}"));
            let (h, b) = Batches::new(&f.bytes).next().expect("a batch");
            assert!(h.base_offset <= offset && offset <= h.last_offset());
            assert!(batches.iter().any(|x| x[..] == *b), "trial {trial}");
        }
    }
}

#[test]
fn regression_index_entry_past_usize_is_none_not_overflow() {
    let scratch = ScratchDir::new("idx-regress");
    let p = scratch.path().join("0.index");
    std::fs::write(&p, [0u8; 16]).expect("write");
    let idx = ottla_storage::log::offset_index::OffsetIndex::open_readonly(&p, 0).expect("open");
    assert_eq!(idx.entry(u64::MAX / 8), None);
    assert_eq!(idx.entry(u64::MAX), None);
    assert_eq!(idx.entry(1), Some((0, 0)));
}

/// A batch with a valid CRC whose record claims an offset delta past the
/// batch's last offset would put that record under another batch's offset.
#[test]
fn regression_record_offset_delta_outside_its_batch_is_an_error() {
    use ottla_record::batch::{BatchHeader, RecordIter, HEADER_LEN};
    let mut b = BatchBuilder::with_capacity(64);
    b.append(1, None, Some(b"v"), &[]);
    let mut bytes = b.finish().to_vec();
    // Record: length, attributes, timestamp delta, offset delta (zig-zag 0).
    let at = HEADER_LEN + 3;
    assert_eq!(bytes[at], 0);
    bytes[at] = 2; // offset delta 1, but lastOffsetDelta is 0
    fuzzing::seal_batch(&mut bytes);
    let h = ottla_record::check_batch(&bytes).expect("sealed batch");
    let r: Vec<_> = RecordIter::new(h, &bytes[HEADER_LEN..]).collect();
    assert_eq!(r, vec![Err("record offset delta outside its batch")]);
    let _ = BatchHeader::parse(&bytes);
}

/// A null header key (length -1) used to come back as the empty key.
#[test]
fn regression_null_header_key_is_an_error_not_empty() {
    use ottla_record::batch::{RecordIter, HEADER_LEN};
    let mut b = BatchBuilder::with_capacity(64);
    b.append(1, None, None, &[(b"", Some(b"x"))]);
    let mut bytes = b.finish().to_vec();
    // The record ends: header count 1 (02), key length 0 (00), value "x"
    // (02 'x'). A key length of -1 (01) takes the same one byte.
    let at = bytes.len() - 3;
    assert_eq!(&bytes[at - 1..], &[2, 0, 2, b'x']);
    bytes[at] = 1;
    fuzzing::seal_batch(&mut bytes);
    let h = ottla_record::check_batch(&bytes).expect("sealed batch");
    let r: Vec<_> = RecordIter::new(h, &bytes[HEADER_LEN..]).collect();
    assert_eq!(r, vec![Err("null header key")]);
}

/// Recovery used to accept a batch whose (unchecksummed) base offset was
/// damaged upwards, publishing a gap every later read stopped at.
#[test]
fn regression_recovery_cuts_at_a_damaged_base_offset() {
    let golden = ScratchDir::new("gap");
    let (batches, layout) = write_known_log(golden.path());
    let (path, here) = &layout[0];
    let (bpos, k) = here[2];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.write_all_at(&1000i64.to_be_bytes(), bpos).expect("write");
    drop(f);
    std::fs::remove_file(golden.path().join("t-0/partition.head")).expect("rm head");
    let log = open_partition(golden.path(), &fuzzing::small_config()).expect("open");
    let (got, err) = read_all(&log);
    assert!(err.is_none());
    assert!(got == batches[..k].concat());
    let mut b = BatchBuilder::with_capacity(64);
    b.append(1, None, Some(b"after"), &[]);
    let mut bytes = b.finish().to_vec();
    let info = log
        .append(&mut bytes, ottla_storage::log::Durability::PageCache)
        .expect("append");
    let (got, err) = read_all(&log);
    assert!(err.is_none());
    assert_eq!(got.len(), batches[..k].concat().len() + bytes.len());
    assert_eq!(info.base_offset, log.offsets().expect("offsets").1 - 1);
}

/// `append` stamped a base offset before checking a whole header was
/// there: a valid batch followed by a few stray bytes panicked (slice
/// index) with the partition's locks held.
#[test]
fn regression_append_with_a_short_tail_is_an_error_not_a_panic() {
    let scratch = ScratchDir::new("short-tail");
    let log = open_partition(scratch.path(), &fuzzing::small_config()).expect("open");
    let mut b = BatchBuilder::with_capacity(64);
    b.append(1, None, Some(b"v"), &[]);
    let good = b.finish().to_vec();
    for tail in [1usize, 5, 8, 60] {
        let mut bytes = good.clone();
        bytes.extend(vec![0u8; tail]);
        assert!(matches!(
            log.append(&mut bytes, ottla_storage::log::Durability::PageCache),
            Err(Error::InvalidRecord(_))
        ));
    }
    // A header whose offsets run backwards is refused too.
    let mut bad = good.clone();
    bad[ottla_record::batch::LAST_OFFSET_DELTA..ottla_record::batch::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&(-5i32).to_be_bytes());
    assert!(log
        .append(&mut bad, ottla_storage::log::Durability::PageCache)
        .is_err());
    // Nothing of the refused appends reached the log.
    assert_eq!(log.offsets().expect("offsets"), (0, 0));
    let mut ok = good.clone();
    log.append(&mut ok, ottla_storage::log::Durability::PageCache)
        .expect("valid append");
    assert_eq!(read_all(&log).0, ok);
}

/// Found by libFuzzer (`log_dir`): a head whose seqlock counter is
/// `u64::MAX` (damaged, without the magic, so recovery runs) overflowed in
/// `Head::write` when recovery published the rebuilt state.
#[test]
fn regression_head_seq_at_u64_max_wraps_instead_of_overflowing() {
    let mut head = vec![0u8; 16];
    head[8..].copy_from_slice(&u64::MAX.to_ne_bytes());
    let mut input = vec![8u8]; // a head, no magic, no indexes, unsealed log
    input.extend_from_slice(&(head.len() as u16).to_be_bytes());
    input.extend_from_slice(&head);
    let (log, ..) = fuzzing::real_partition(3);
    input.extend_from_slice(&log);
    fuzzing::log_dir(&input);
    // The same with the magic: a torn update (odd seq) is repaired.
    input[0] = 8 | 16;
    fuzzing::log_dir(&input);
}

/// Found by libFuzzer (`index_files`): an index entry's relative offset
/// added to a base offset near `i64::MAX` (a segment named
/// `09223372036854775807.log`) overflowed; such an entry now reads as none.
#[test]
fn regression_index_entry_offset_overflow_reads_as_no_entry() {
    let crash = [
        0x80u8, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x05, 0x28, 0x24, 0,
    ];
    fuzzing::index_files(&crash);
    let scratch = ScratchDir::new("idx-base");
    let p = scratch.path().join("x.index");
    std::fs::write(&p, [0, 0, 0, 5, 0, 0, 0, 0]).expect("write");
    let idx =
        ottla_storage::log::offset_index::OffsetIndex::open_readonly(&p, i64::MAX).expect("open");
    assert_eq!(idx.entry(0), None);
    assert_eq!(idx.lookup(i64::MAX, 1), (i64::MAX, 0));
}
