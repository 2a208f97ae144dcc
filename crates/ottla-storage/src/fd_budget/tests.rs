//! The budget with slots of plain files: eviction order, transparent
//! reopening, readers holding an evicted file, exclusive slots, threads.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FdBudget, Slot, MIN_OPEN_FILES};
use crate::error::{Error, Result};

fn make_files(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("f{i}"));
            let mut f = File::create(&p).expect("create");
            f.write_all(format!("file-{i:04}").as_bytes())
                .expect("write");
            p
        })
        .collect()
}

fn opener(path: &Path) -> impl Fn() -> Result<File> + '_ {
    move || File::open(path).map_err(|e| Error::io("open", path, e))
}

fn read_all(f: &File) -> String {
    let mut buf = [0u8; 9];
    f.read_exact_at(&mut buf, 0).expect("read");
    String::from_utf8(buf.to_vec()).expect("utf8")
}

/// Descriptors of this process that name `path`.
fn fds_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t == path)
        .count()
}

#[test]
fn least_recently_used_are_closed_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = make_files(dir.path(), 40);
    let budget = FdBudget::new(MIN_OPEN_FILES);
    let slots: Vec<Slot<File>> = paths.iter().map(|_| Slot::new(&budget, false)).collect();
    // Open the first 16 (the whole budget), then keep using the first 4.
    for (s, p) in slots.iter().zip(&paths).take(16) {
        s.get(opener(p)).expect("open");
    }
    for i in 16..40 {
        for (j, (s, p)) in slots.iter().zip(&paths).take(4).enumerate() {
            assert_eq!(
                read_all(&s.get(opener(p)).expect("get")),
                format!("file-{j:04}")
            );
        }
        slots[i].get(opener(&paths[i])).expect("open");
        assert!(budget.open() <= budget.limit(), "{} open", budget.open());
    }
    assert!(budget.evictions() >= 24);
    for s in slots.iter().take(4) {
        assert!(s.is_open(), "a slot used before every open was closed");
    }
    assert!(slots[39].is_open(), "the slot just opened was closed");
    let open_fds: usize = paths.iter().map(|p| fds_on(p)).sum();
    assert_eq!(open_fds, budget.open());
}

#[test]
fn a_closed_slot_reopens_on_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = make_files(dir.path(), 1);
    let budget = FdBudget::new(MIN_OPEN_FILES);
    let slot = Slot::new(&budget, false);
    assert_eq!(
        read_all(&slot.get(opener(&paths[0])).expect("open")),
        "file-0000"
    );
    assert_eq!(budget.open(), 1);
    assert!(slot.close());
    assert_eq!(budget.open(), 0);
    assert_eq!(fds_on(&paths[0]), 0);
    assert_eq!(
        read_all(&slot.get(opener(&paths[0])).expect("reopen")),
        "file-0000"
    );
    assert_eq!(budget.open(), 1);
    drop(slot);
    assert_eq!(budget.open(), 0);
    assert_eq!(fds_on(&paths[0]), 0);
}

#[test]
fn a_reader_keeps_reading_a_file_evicted_under_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = make_files(dir.path(), 20);
    let budget = FdBudget::new(MIN_OPEN_FILES);
    let slots: Vec<Slot<File>> = paths.iter().map(|_| Slot::new(&budget, false)).collect();
    let held = slots[0].get(opener(&paths[0])).expect("open");
    for (s, p) in slots.iter().zip(&paths).skip(1) {
        s.get(opener(p)).expect("open");
    }
    assert!(
        !slots[0].is_open(),
        "the least recently used slot stayed open"
    );
    // Evicted from the budget, still open for the reader, even unlinked.
    std::fs::remove_file(&paths[0]).expect("unlink");
    assert_eq!(read_all(&held), "file-0000");
    drop(held);
    // Reopening a file that is gone is the opener's error, not a panic.
    assert!(slots[0].get(opener(&paths[0])).is_err());
    assert_eq!(budget.open(), slots.iter().filter(|s| s.is_open()).count());
}

#[test]
fn an_exclusive_slot_stays_open_while_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = make_files(dir.path(), 20);
    let budget = FdBudget::new(MIN_OPEN_FILES);
    let locked: Slot<File> = Slot::new(&budget, true);
    let guard = locked.get(opener(&paths[0])).expect("open");
    let others: Vec<Slot<File>> = paths
        .iter()
        .skip(1)
        .map(|_| Slot::new(&budget, false))
        .collect();
    for (s, p) in others.iter().zip(paths.iter().skip(1)) {
        s.get(opener(p)).expect("open");
    }
    assert!(locked.is_open(), "an exclusive slot was closed while held");
    let again = locked.get(opener(&paths[0])).expect("get");
    assert!(Arc::ptr_eq(&guard, &again), "one value for every holder");
    drop((guard, again));
    for (s, p) in others.iter().zip(paths.iter().skip(1)) {
        s.get(opener(p)).expect("use");
    }
    // Now unused and the least recent: the next open past the budget
    // closes it.
    let extra: Slot<File> = Slot::new(&budget, false);
    extra.get(opener(&paths[1])).expect("open");
    assert!(!locked.is_open(), "an idle exclusive slot was never closed");
}

#[test]
fn a_smaller_limit_closes_what_runs_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = make_files(dir.path(), 64);
    let budget = FdBudget::new(64);
    let slots: Vec<Slot<File>> = paths.iter().map(|_| Slot::new(&budget, false)).collect();
    for (s, p) in slots.iter().zip(&paths) {
        s.get(opener(p)).expect("open");
    }
    assert_eq!(budget.open(), 64);
    budget.set_limit(20);
    assert!(budget.open() <= 20);
    assert_eq!(slots.iter().filter(|s| s.is_open()).count(), budget.open());
}

#[test]
fn threads_share_a_small_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = Arc::new(make_files(dir.path(), 96));
    let budget = FdBudget::new(MIN_OPEN_FILES);
    let slots: Arc<Vec<Slot<File>>> =
        Arc::new(paths.iter().map(|_| Slot::new(&budget, false)).collect());
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (paths, slots) = (paths.clone(), slots.clone());
            std::thread::spawn(move || {
                let mut x = t as usize * 7919;
                for _ in 0..3000 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let i = (x >> 33) % paths.len();
                    let f = slots[i].get(opener(&paths[i])).expect("get");
                    assert_eq!(read_all(&f), format!("file-{i:04}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // An eviction skips a slot another thread is cloning at that moment,
    // so the count may end a little over.
    assert!(
        budget.open() <= budget.limit() + 6,
        "{} open",
        budget.open()
    );
    assert_eq!(slots.iter().filter(|s| s.is_open()).count(), budget.open());
    let open_fds: usize = paths.iter().map(|p| fds_on(p)).sum();
    assert_eq!(open_fds, budget.open());
    assert!(budget.evictions() > 0);
}
