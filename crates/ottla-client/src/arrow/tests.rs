//! `Consumer::drain_while` refusals and `RecordColumns` filled from a real
//! log: a refused record is not handed out, and comes first next time.

use std::sync::Arc;

use super::RecordColumns;
use crate::consumer::{Consumer, ConsumerConfig, OffsetReset};
use crate::producer::{Producer, ProducerConfig};
use ottla_storage::store::Store;

fn setup(partitions: u32, per_partition: usize) -> (tempfile::TempDir, Arc<Store>, Consumer) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open store");
    store.create_topic("t", partitions, &[]).expect("create");
    let p = Producer::new(store.clone(), ProducerConfig::default()).expect("producer");
    for part in 0..partitions {
        let values: Vec<Vec<u8>> = (0..per_partition)
            .map(|i| format!("p{part}-{i}").into_bytes())
            .collect();
        let refs: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_slice())).collect();
        p.send_values("t", &refs, Some(part), 0).expect("send");
    }
    for c in p.flush() {
        assert!(c.error().is_none());
        c.run();
    }
    let c = Consumer::new(
        store.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            ..Default::default()
        },
    )
    .expect("consumer");
    c.subscribe(&["t".to_string()]).expect("subscribe");
    (tmp, store, c)
}

#[test]
fn a_refused_record_keeps_its_position_and_comes_first_next_time() {
    let (_tmp, _store, c) = setup(1, 10);
    let mut seen = Vec::new();
    let n = c
        .drain_while(100, &mut |_, r| {
            if r.offset == 4 {
                return false;
            }
            seen.push(r.offset);
            true
        })
        .expect("drain");
    assert_eq!(n, 4);
    assert_eq!(seen, vec![0, 1, 2, 3]);
    assert_eq!(c.position("t", 0).expect("position"), 4);
    let mut rest = Vec::new();
    c.drain(100, &mut |_, r| rest.push(r.offset))
        .expect("drain");
    assert_eq!(rest, (4..10).collect::<Vec<_>>());
}

#[test]
fn refusing_the_first_record_hands_out_nothing() {
    let (_tmp, _store, c) = setup(2, 3);
    let n = c.drain_while(100, &mut |_, _| false).expect("drain");
    assert_eq!(n, 0);
    let mut all = Vec::new();
    while c
        .drain(100, &mut |tp, r| all.push((tp.partition, r.offset)))
        .expect("drain")
        > 0
    {}
    all.sort_unstable();
    assert_eq!(all, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
}

#[test]
fn columns_filled_from_the_log_hold_every_record() {
    let (_tmp, _store, c) = setup(3, 50);
    let mut cols = RecordColumns::with_capacity(16, 8);
    while c
        .drain_while(1000, &mut |tp, r| {
            cols.push(tp, r);
            true
        })
        .expect("drain")
        > 0
    {}
    assert_eq!(cols.len(), 150);
    assert_eq!(cols.topics.len(), 1);
    for i in 0..cols.len() {
        let (p, o) = (cols.partition[i], cols.offset[i]);
        let want = format!("p{p}-{o}");
        assert_eq!(cols.value.get(i), Some(want.as_bytes()));
        assert_eq!(cols.key.get(i), None);
    }
}
