//! The coordinator against a real store: markers land in the partitions,
//! the state survives a restart, and a Prepare state left by a crash is
//! completed by the next coordinator.

use std::sync::Arc;

use tokio::sync::watch;

use super::*;
use crate::replica::ReplicaManager;
use ottla_storage::log::producer_state::ProducerStateManager;

fn setup(dir: &std::path::Path) -> (Arc<Store>, ReplicaManager, crate::replica::wake::Waker) {
    let store = Store::open(dir).expect("store");
    store.create_topic("t", 1, &[]).expect("topic");
    let (_tx, rx) = watch::channel(false);
    let (replicas, waker) = ReplicaManager::start(
        store.clone(),
        Durability::PageCache,
        rx,
        tokio::runtime::Handle::current(),
    );
    (store, replicas, waker)
}

fn append_txn(store: &Arc<Store>, pid: i64, epoch: i16, seq: i32) {
    let mut b = ottla_record::BatchBuilder::with_capacity(128);
    b.append(1, None, Some(b"v"), &[]);
    let mut v = b.finish().to_vec();
    use ottla_record::batch::*;
    v[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&TRANSACTIONAL_FLAG.to_be_bytes());
    v[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    v[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    v[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    seal_crc(&mut v);
    let log = store.partition_by_name("t", 0).expect("log");
    log.append(&mut v, Durability::PageCache).expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_writes_markers_and_a_restart_finishes_a_prepared_abort() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, replicas, waker) = setup(dir.path());
    let ids = ProducerIdManager::default();
    let c = TxnCoordinator::start(store.clone(), Durability::PageCache, 60_000).expect("start");
    assert_eq!(
        c.init_producer_id(&replicas, &ids, "x", 60_001 + 900_000, None),
        Err(code::INVALID_TRANSACTION_TIMEOUT)
    );
    let (pid, epoch) = c
        .init_producer_id(&replicas, &ids, "x", 1000, None)
        .expect("init");
    assert_eq!(epoch, 0);
    let part = ("t".to_string(), 0);
    assert_eq!(
        c.verify_produce(pid, epoch, "t", 0),
        Err(code::INVALID_TXN_STATE)
    );
    c.add_partitions(&replicas, "x", pid, epoch, std::slice::from_ref(&part))
        .expect("add");
    c.verify_produce(pid, epoch, "t", 0).expect("verified");
    append_txn(&store, pid, epoch, 0);
    c.end_txn(&replicas, "x", pid, epoch, true).expect("commit");
    assert_eq!(
        c.describe("x").map(|m| m.state),
        Some(TxnState::CompleteCommit)
    );
    let log = store.partition_by_name("t", 0).expect("log");
    let st = ProducerStateManager::rebuild(&log).expect("rebuild");
    assert_eq!(st.last_stable_offset(2), 2, "the marker ended it");

    // A second transaction, left in PrepareAbort as a crash would leave it.
    c.add_partitions(&replicas, "x", pid, epoch, &[part])
        .expect("add");
    append_txn(&store, pid, epoch, 1);
    let mut m = c.describe("x").expect("known");
    let EndStep::Prepare(p) = m
        .prepare_end(pid, epoch, false, true, now_ms())
        .expect("ok")
    else {
        panic!("prepare");
    };
    c.log()
        .expect("log")
        .write(&p, Durability::PageCache)
        .expect("write");
    m = p;
    assert_eq!(m.state, TxnState::PrepareAbort);
    drop(c);
    let st = ProducerStateManager::rebuild(&log).expect("rebuild");
    assert_eq!(st.last_stable_offset(3), 2, "still open");

    let c2 = TxnCoordinator::start(store.clone(), Durability::PageCache, 60_000).expect("restart");
    assert_eq!(
        c2.describe("x").map(|m| m.state),
        Some(TxnState::PrepareAbort)
    );
    c2.tick(&replicas);
    assert_eq!(
        c2.describe("x").map(|m| m.state),
        Some(TxnState::CompleteAbort)
    );
    let st = ProducerStateManager::rebuild(&log).expect("rebuild");
    assert_eq!(st.last_stable_offset(4), 4);
    let aborted = st.aborted_txns(0, 4);
    assert_eq!(aborted.len(), 1);
    assert_eq!((aborted[0].producer_id, aborted[0].first_offset), (pid, 2));
    // A new producer for the id bumps the epoch: the old one is fenced.
    let (pid2, epoch2) = c2
        .init_producer_id(&replicas, &ids, "x", 1000, None)
        .expect("init");
    assert_eq!((pid2, epoch2), (pid, 1));
    assert_eq!(
        c2.add_partitions(&replicas, "x", pid, epoch, &[("t".into(), 0)]),
        Err(code::PRODUCER_FENCED)
    );
    waker.stop();
}

#[test]
fn state_write_errors_are_kafkas() {
    // A full disk (KAFKA_STORAGE_ERROR) is NOT_COORDINATOR: the client
    // retries, where KAFKA_STORAGE_ERROR made librdkafka abort the
    // transaction (tests/test_transactions_full_disk.py).
    for (append, answer) in [
        (code::KAFKA_STORAGE_ERROR, code::NOT_COORDINATOR),
        (code::NOT_LEADER_OR_FOLLOWER, code::NOT_COORDINATOR),
        (code::NOT_COORDINATOR, code::NOT_COORDINATOR),
        (code::REQUEST_TIMED_OUT, code::COORDINATOR_NOT_AVAILABLE),
        (code::MESSAGE_TOO_LARGE, code::UNKNOWN_SERVER_ERROR),
        (code::NONE, code::NONE),
    ] {
        assert_eq!(state_write_error(append), answer, "{append}");
    }
}

#[test]
fn long_transactional_ids_are_cut_in_log_lines() {
    assert_eq!(shown_id("tx"), "\"tx\"");
    let long = "é".repeat(300);
    let shown = shown_id(&long);
    assert!(shown.ends_with("... (600 bytes)"), "{shown}");
    assert_eq!(shown.chars().filter(|c| *c == 'é').count(), 100);
}

/// Issue 15's stall of a new coordinator, made deterministic: a request
/// acting on a transaction holds its lock on a blocking thread while it
/// waits on the runtime (as a cluster's state write waits for the high
/// watermark, bounded by a timer), and a Produce of that transaction is
/// verified (KIP-890) on a runtime worker, here the only one. Had the
/// verification waited for the lock, the worker would have been parked:
/// nothing would drive the timer (nor, in a cluster, the follower fetches)
/// the request waits for, and neither could ever go on.
#[test]
fn a_produce_is_verified_without_waiting_for_an_action_in_progress() {
    let dir = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (store, replicas, waker) = {
        let _g = rt.enter();
        setup(dir.path())
    };
    let ids = ProducerIdManager::default();
    let c = Arc::new(
        TxnCoordinator::start(store.clone(), Durability::PageCache, 60_000).expect("start"),
    );
    let (pid, epoch) = c
        .init_producer_id(&replicas, &ids, "x", 1000, None)
        .expect("init");
    c.add_partitions(&replicas, "x", pid, epoch, &[("t".to_string(), 0)])
        .expect("add");
    let (done, answered) = std::sync::mpsc::channel();
    let coordinator = c.clone();
    rt.spawn(async move {
        let (locked, is_locked) = tokio::sync::oneshot::channel();
        let holder = tokio::spawn({
            let c = coordinator.clone();
            async move {
                crate::blocking(|| {
                    let shared = c.get("x").expect("known");
                    let _acting = shared.lock();
                    let _ = locked.send(());
                    tokio::runtime::Handle::current()
                        .block_on(tokio::time::sleep(Duration::from_millis(200)));
                })
            }
        });
        let _ = is_locked.await;
        // On the worker, as Produce verifies a transactional batch.
        let verified = coordinator.verify_produce(pid, epoch, "t", 0);
        let waited = holder.await.is_ok();
        let _ = done.send((verified, waited));
    });
    match answered.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => assert_eq!(r, (Ok(()), true)),
        Err(_) => {
            // The runtime is deadlocked: dropping it would wait forever.
            std::mem::forget(rt);
            panic!("the runtime stalled: the verification waited for the transaction's lock");
        }
    }
    waker.stop();
}

/// An action that starts ending the transaction announces it before its
/// state is written: from then on its producer's batches are refused (as
/// they waited for the lock before); released without the state written,
/// the transaction is open again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ending_transaction_refuses_its_batches_from_the_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, replicas, waker) = setup(dir.path());
    let ids = ProducerIdManager::default();
    let c = TxnCoordinator::start(store.clone(), Durability::PageCache, 60_000).expect("start");
    let (pid, epoch) = c
        .init_producer_id(&replicas, &ids, "x", 1000, None)
        .expect("init");
    c.add_partitions(&replicas, "x", pid, epoch, &[("t".to_string(), 0)])
        .expect("add");
    let shared = c.get("x").expect("known");
    {
        let mut slot = shared.lock();
        let m = (*slot).clone();
        let EndStep::Prepare(p) = m.prepare_end(pid, epoch, true, true, now_ms()).expect("ok")
        else {
            panic!("prepare");
        };
        slot.announce(&p);
        assert_eq!(
            c.verify_produce(pid, epoch, "t", 0),
            Err(code::INVALID_TXN_STATE)
        );
        assert_eq!(
            c.describe("x").map(|m| m.state),
            Some(TxnState::PrepareCommit)
        );
    }
    // Never written: the transaction is still open.
    c.verify_produce(pid, epoch, "t", 0).expect("open again");
    waker.stop();
}
