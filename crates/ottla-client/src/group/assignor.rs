//! Partition assignors: Kafka's `range`, `roundrobin` and
//! `cooperative-sticky`. Each is a pure function of the members (sorted by
//! id, with their subscribed topics), the partition counts, and for the
//! sticky one the previous assignment, so any member holding the group lock
//! computes the same answer.

use std::collections::{BTreeMap, BTreeSet};

use ottla_storage::error::{Error, Result};

use super::state::Assignment;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl Assignor {
    pub fn parse(name: &str) -> Result<Assignor> {
        match name.trim() {
            "range" => Ok(Assignor::Range),
            "roundrobin" => Ok(Assignor::RoundRobin),
            "cooperative-sticky" => Ok(Assignor::CooperativeSticky),
            other => Err(Error::InvalidConfig(format!(
                "partition_assignment_strategy must be 'range', 'roundrobin' or \
                 'cooperative-sticky', not {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Cooperative: a member gives up only the partitions that move. Eager
    /// (range, roundrobin): every member revokes everything at each new
    /// generation, as Kafka's eager protocol does.
    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    /// `members`: (member id, subscribed topics), sorted by id.
    /// `topics`: partition counts. Returns every member's partitions, sorted
    /// (members with nothing get an empty list).
    pub fn assign(
        self,
        members: &[(String, BTreeSet<String>)],
        topics: &BTreeMap<String, u32>,
        previous: &Assignment,
    ) -> Assignment {
        let mut out: Assignment = members.iter().map(|(m, _)| (m.clone(), vec![])).collect();
        match self {
            Assignor::Range => range(members, topics, &mut out),
            Assignor::RoundRobin => round_robin(members, topics, &mut out),
            Assignor::CooperativeSticky => sticky(members, topics, previous, &mut out),
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }
}

fn range(
    members: &[(String, BTreeSet<String>)],
    topics: &BTreeMap<String, u32>,
    out: &mut Assignment,
) {
    for (topic, &n) in topics {
        let subs: Vec<&String> = members
            .iter()
            .filter(|(_, t)| t.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subs.is_empty() {
            continue;
        }
        let per = n / subs.len() as u32;
        let extra = n % subs.len() as u32;
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = per + u32::from((i as u32) < extra);
            if let Some(v) = out.get_mut(*m) {
                v.extend((next..next + count).map(|p| (topic.clone(), p)));
            }
            next += count;
        }
    }
}

fn round_robin(
    members: &[(String, BTreeSet<String>)],
    topics: &BTreeMap<String, u32>,
    out: &mut Assignment,
) {
    if members.is_empty() {
        return;
    }
    let mut at = 0;
    for (topic, &n) in topics {
        for p in 0..n {
            // The next member in circular order that subscribes to the topic.
            for step in 0..members.len() {
                let (m, subs) = &members[(at + step) % members.len()];
                if subs.contains(topic) {
                    if let Some(v) = out.get_mut(m) {
                        v.push((topic.clone(), p));
                    }
                    at = (at + step + 1) % members.len();
                    break;
                }
            }
        }
    }
}

/// Keep every partition where it was (if its owner is still here and still
/// subscribes), hand the rest to the least loaded eligible member, then move
/// single partitions from the most to the least loaded member while that
/// narrows a gap of two or more. Every move is forced by balance, so a
/// rebalance moves only the partitions it must.
fn sticky(
    members: &[(String, BTreeSet<String>)],
    topics: &BTreeMap<String, u32>,
    previous: &Assignment,
    out: &mut Assignment,
) {
    let subs: BTreeMap<&String, &BTreeSet<String>> = members.iter().map(|(m, t)| (m, t)).collect();
    let exists = |t: &str, p: u32| topics.get(t).is_some_and(|&n| p < n);
    let mut taken: BTreeSet<(String, u32)> = BTreeSet::new();
    for (m, tps) in previous {
        let Some(s) = subs.get(m) else { continue };
        for (t, p) in tps {
            if s.contains(t) && exists(t, *p) && taken.insert((t.clone(), *p)) {
                if let Some(v) = out.get_mut(m) {
                    v.push((t.clone(), *p));
                }
            }
        }
    }
    for (topic, &n) in topics {
        for p in 0..n {
            if taken.contains(&(topic.clone(), p)) {
                continue;
            }
            let best = members
                .iter()
                .filter(|(_, t)| t.contains(topic))
                .min_by_key(|(m, _)| (out.get(m).map_or(0, Vec::len), m.clone()));
            if let Some((m, _)) = best {
                if let Some(v) = out.get_mut(m) {
                    v.push((topic.clone(), p));
                }
            }
        }
    }
    // Each move lowers the sum of squared loads, so this ends.
    loop {
        let mut moved = false;
        let mut order: Vec<(usize, &String)> = members
            .iter()
            .map(|(m, _)| (out.get(m).map_or(0, Vec::len), m))
            .collect();
        order.sort();
        'outer: for &(hi_n, hi) in order.iter().rev() {
            for &(lo_n, lo) in order.iter() {
                if hi_n < lo_n + 2 {
                    break;
                }
                let lo_subs = subs[lo];
                let candidate = out
                    .get(hi)
                    .and_then(|v| v.iter().rev().find(|(t, _)| lo_subs.contains(t)).cloned());
                if let Some(tp) = candidate {
                    if let Some(v) = out.get_mut(hi) {
                        v.retain(|x| *x != tp);
                    }
                    if let Some(v) = out.get_mut(lo) {
                        v.push(tp);
                    }
                    moved = true;
                    break 'outer;
                }
            }
        }
        if !moved {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str], topics: &[&str]) -> Vec<(String, BTreeSet<String>)> {
        ids.iter()
            .map(|m| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn parts(a: &Assignment, m: &str) -> Vec<(String, u32)> {
        a.get(m).cloned().unwrap_or_default()
    }

    fn tp(t: &str, p: u32) -> (String, u32) {
        (t.to_string(), p)
    }

    #[test]
    fn range_gives_contiguous_runs_per_topic() {
        let m = members(&["a", "b"], &["t", "u"]);
        let a = Assignor::Range.assign(&m, &counts(&[("t", 3), ("u", 2)]), &Assignment::new());
        assert_eq!(parts(&a, "a"), vec![tp("t", 0), tp("t", 1), tp("u", 0)]);
        assert_eq!(parts(&a, "b"), vec![tp("t", 2), tp("u", 1)]);
    }

    #[test]
    fn roundrobin_deals_in_turn_and_skips_non_subscribers() {
        let mut m = members(&["a", "b"], &["t"]);
        m.push(("c".into(), ["u".to_string()].into_iter().collect()));
        let a = Assignor::RoundRobin.assign(&m, &counts(&[("t", 3), ("u", 2)]), &Assignment::new());
        assert_eq!(parts(&a, "a"), vec![tp("t", 0), tp("t", 2)]);
        assert_eq!(parts(&a, "b"), vec![tp("t", 1)]);
        assert_eq!(parts(&a, "c"), vec![tp("u", 0), tp("u", 1)]);
    }

    #[test]
    fn every_partition_has_exactly_one_owner() {
        let topics = counts(&[("t", 7), ("u", 3)]);
        for assignor in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            for n in 1..5 {
                let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let a = assignor.assign(&members(&refs, &["t", "u"]), &topics, &Assignment::new());
                let mut all: Vec<_> = a.values().flatten().cloned().collect();
                all.sort();
                let before = all.len();
                all.dedup();
                assert_eq!(before, all.len(), "{assignor:?} duplicated a partition");
                assert_eq!(all.len(), 10, "{assignor:?} with {n} members");
                let loads: Vec<usize> = a.values().map(Vec::len).collect();
                let spread = loads.iter().max().unwrap_or(&0) - loads.iter().min().unwrap_or(&0);
                if assignor != Assignor::Range {
                    assert!(spread <= 1, "{assignor:?} unbalanced: {loads:?}");
                }
            }
        }
    }

    #[test]
    fn sticky_moves_only_what_balance_requires() {
        let topics = counts(&[("t", 6)]);
        let two = Assignor::CooperativeSticky.assign(
            &members(&["a", "b"], &["t"]),
            &topics,
            &Assignment::new(),
        );
        assert_eq!(two.values().map(Vec::len).collect::<Vec<_>>(), vec![3, 3]);
        let three =
            Assignor::CooperativeSticky.assign(&members(&["a", "b", "c"], &["t"]), &topics, &two);
        assert_eq!(parts(&three, "c").len(), 2);
        for m in ["a", "b"] {
            let kept: Vec<_> = parts(&three, m)
                .into_iter()
                .filter(|x| parts(&two, m).contains(x))
                .collect();
            assert_eq!(kept.len(), 2, "{m} kept {kept:?}");
            assert_eq!(parts(&three, m).len(), 2);
        }
        // c leaves: its two go back, a and b keep everything they had.
        let back =
            Assignor::CooperativeSticky.assign(&members(&["a", "b"], &["t"]), &topics, &three);
        for m in ["a", "b"] {
            for x in parts(&three, m) {
                assert!(parts(&back, m).contains(&x), "{m} lost {x:?}");
            }
            assert_eq!(parts(&back, m).len(), 3);
        }
        // A member that unsubscribes a topic gives its partitions up.
        let mut m = members(&["a"], &["t"]);
        m.push(("b".into(), BTreeSet::new()));
        let gone = Assignor::CooperativeSticky.assign(&m, &topics, &back);
        assert_eq!(parts(&gone, "a").len(), 6);
        assert!(parts(&gone, "b").is_empty());
    }

    #[test]
    fn names_parse() {
        for a in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            assert_eq!(Assignor::parse(a.name()).expect("parse"), a);
        }
        assert!(matches!(
            Assignor::parse("sticky"),
            Err(Error::InvalidConfig(_))
        ));
    }
}
