//! Deleting, creating and growing topics survive `kill -9` at any step:
//! a deleted topic's records never come back in a topic created or grown
//! later under the same name, and nothing of it stays on disk once the
//! directory is opened again (`store::log_dirs` has the design).
//!
//! The crashes are real: the test binary runs itself as a child
//! ([`child_process`]) with `OTTLA_TOPIC_CRASH_AT` naming the step where
//! the child SIGKILLs itself.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ottla_record::BatchBuilder;
use ottla_storage::log::Durability;
use ottla_storage::store::Store;
use ottla_storage::Error;

const CHILD_DIR: &str = "OTTLA_TEST_CHILD_DIR";
const CHILD_ACTION: &str = "OTTLA_TEST_CHILD_ACTION";
const PARTITIONS: u32 = 40;

/// Create `topic` with `n` partitions, one record `secret-<p>` in each.
fn fill(store: &Store, topic: &str, n: u32) {
    let t = store.create_topic(topic, n, &[]).expect("create");
    for p in 0..n {
        let mut b = BatchBuilder::with_capacity(64);
        b.append(
            ottla_storage::log::now_ms(),
            None,
            Some(format!("secret-{p}").as_bytes()),
            &[],
        );
        let mut bytes = b.finish().to_vec();
        let log = store.partition(&t, p).expect("partition");
        log.append(&mut bytes, Durability::PageCache)
            .expect("append");
    }
}

/// Not a test of its own: the body of the child process the crash tests
/// start (it does nothing when run by the test harness directly).
#[test]
fn child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let store = Store::open(Path::new(&dir)).expect("open");
    match std::env::var(CHILD_ACTION).as_deref() {
        Ok("delete") => {
            fill(&store, "t", PARTITIONS);
            store.delete_topic("t").expect("delete");
        }
        Ok("create") => {
            store.create_topic("t", PARTITIONS, &[]).expect("create");
        }
        Ok("grow") => {
            store.create_topic("t", 1, &[]).expect("create");
            store.create_partitions("t", PARTITIONS).expect("grow");
        }
        other => panic!("unknown child action {other:?}"),
    }
    // Reached only when the crash point did not fire.
    std::process::exit(3);
}

/// Run [`child_process`] doing `action` on `dir`, killed at `step`.
fn run_killed(dir: &Path, action: &str, step: &str) {
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_process", "--test-threads=1", "--quiet"])
        .env(CHILD_DIR, dir)
        .env(CHILD_ACTION, action)
        .env("OTTLA_TOPIC_CRASH_AT", step)
        .status()
        .expect("run child");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{action} at {step}: the child should have been killed, got {status:?}"
    );
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("list").flatten() {
        let p = e.path();
        if e.file_type().expect("type").is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// No trace of the old records anywhere, and no directory but the live
/// partitions of `t` (`live` of them) and `.ottla`.
fn assert_clean(root: &Path, live: u32) {
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut want: Vec<String> = (0..live).map(|p| format!("t-{p}")).collect();
    want.push(".ottla".into());
    want.sort();
    assert_eq!(dirs, want, "leftovers in the data directory");
    let mut all = Vec::new();
    files(root, &mut all);
    for f in all {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        assert!(!name.starts_with("deleted-"), "{}", f.display());
        // Records live in `.log` files (the indexes are large and sparse).
        if !name.ends_with(".log") {
            continue;
        }
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !bytes.windows(7).any(|w| w == b"secret-"),
            "{} still holds a deleted record",
            f.display()
        );
    }
}

/// Re-create `t` with one partition and grow it to [`PARTITIONS`]: every
/// partition starts empty.
fn regrow_is_empty(store: &Store) {
    store.create_topic("t", 1, &[]).expect("re-create");
    let t = store.create_partitions("t", PARTITIONS).expect("grow");
    for p in 0..PARTITIONS {
        let log = store.partition(&t, p).expect("partition");
        assert_eq!(
            log.offsets().expect("offsets"),
            (0, 0),
            "t-{p} adopted old records"
        );
    }
}

#[test]
fn delete_killed_at_each_step_leaves_nothing_that_comes_back() {
    for step in ["committed", "moving", "moved"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("data");
        // A process that had the directory open before the crash creates
        // and grows the topic again without reopening: no sweep ran, and
        // still nothing is adopted.
        let before = Store::open(&root).expect("open");
        run_killed(&root, "delete", step);
        assert!(before.topic("t").expect("topic").is_none(), "{step}");
        regrow_is_empty(&before);
        drop(before);
        // A fresh open sweeps what the crash left.
        let store = Store::open(&root).expect("reopen");
        assert_clean(&root, PARTITIONS);
        drop(store);
    }
}

#[test]
fn open_after_a_killed_delete_sweeps_it() {
    for step in ["committed", "moving", "moved"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("data");
        run_killed(&root, "delete", step);
        let store = Store::open(&root).expect("open");
        assert!(store.list_topics(true).expect("list").is_empty(), "{step}");
        assert_clean(&root, 0);
        regrow_is_empty(&store);
    }
}

#[test]
fn create_or_grow_killed_before_its_commit_leaves_nothing() {
    for action in ["create", "grow"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("data");
        run_killed(&root, action, &format!("{action}-dirs"));
        let store = Store::open(&root).expect("open");
        let live = match store.topic("t").expect("topic") {
            None => 0,
            Some(t) => t.partitions,
        };
        // The new partitions were never committed: swept.
        assert_eq!(live, u32::from(action == "grow"), "{action}");
        assert_clean(&root, live);
    }
}

#[test]
fn leftovers_found_at_open_are_removed_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("data");
    {
        let store = Store::open(&root).expect("open");
        fill(&store, "t", 2);
        fill(&store, "a-1", 1);
    }
    // What crashes of earlier versions and of this one leave: a partition
    // beyond the topic's count, a partition of a topic that is gone, a
    // directory being deleted, and an old-style grave.
    for d in [
        "t-2",
        "gone-0",
        "a-1-1",
        "t-0.0123456789abcdef0123456789abcdef-delete",
    ] {
        std::fs::create_dir(root.join(d)).expect("mkdir");
        std::fs::write(root.join(d).join("00000000000000000000.log"), b"secret-x").expect("w");
        std::fs::write(root.join(d).join("partition.lock"), b"").expect("w");
    }
    // A create that died before its commit leaves empty directories.
    std::fs::create_dir(root.join("new-3")).expect("mkdir");
    std::fs::create_dir(root.join(".ottla/deleted-1-2")).expect("mkdir");
    // Not ottla's: left alone.
    for d in ["notes", "t-01", "t-x", "backup-2024"] {
        std::fs::create_dir(root.join(d)).expect("mkdir");
        std::fs::write(root.join(d).join("readme"), b"mine").expect("w");
    }
    let store = Store::open(&root).expect("reopen");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".ottla",
            "a-1-0",
            "backup-2024",
            "notes",
            "t-0",
            "t-01",
            "t-1",
            "t-x"
        ]
    );
    assert!(!root.join(".ottla/deleted-1-2").exists());
    let t = store.require_topic("t").expect("t");
    assert_eq!(
        store.partition(&t, 1).expect("p").offsets().expect("o"),
        (0, 1)
    );
}

#[test]
fn a_stale_topic_handle_does_not_bring_a_deleted_partition_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("data");
    let store = Store::open(&root).expect("open");
    fill(&store, "t", 3);
    let stale = store.require_topic("t").expect("t");
    store.delete_topic("t").expect("delete");
    for p in 0..3 {
        assert!(
            matches!(
                store.partition(&stale, p),
                Err(Error::UnknownTopicOrPartition { .. })
            ),
            "t-{p}"
        );
    }
    assert_clean(&root, 0);
    // Re-created with fewer partitions, a stale handle reaches only those.
    store.create_topic("t", 1, &[]).expect("re-create");
    assert!(store.partition(&stale, 2).is_err());
    assert_eq!(
        store.partition(&stale, 0).expect("p").offsets().expect("o"),
        (0, 0)
    );
    assert_clean(&root, 1);
}

/// A process killed while writing a topic's metadata leaves a `.tmp-*`
/// file beside it; the next open removes it, and the topics are unchanged.
#[test]
fn half_written_metadata_is_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        fill(&store, "kept", 2);
    }
    let topics = dir.path().join(".ottla").join("topics");
    let leftover = topics.join(".tmp-4194304-7");
    std::fs::write(&leftover, "partitions=").expect("write leftover");
    let store = Store::open(dir.path()).expect("reopen");
    assert!(!leftover.exists(), "the half-written file is still there");
    assert_eq!(store.list_topics(false).expect("list"), ["kept"]);
    assert_eq!(store.require_topic("kept").expect("topic").partitions, 2);
}
