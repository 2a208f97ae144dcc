//! The group state file: generation, protocol, members, the partition counts
//! the assignment was computed from, and the target assignment.
//!
//! It is a small text file, one fact per line, rewritten by rename (readers
//! see the old or the new file, never a mix) and only under the group lock.
//! It is not fsync'd: membership does not outlive the processes that hold it,
//! so after a power loss a damaged file is read as an empty group.
//!
//! ```text
//! ottla-group 1
//! generation 7
//! protocol cooperative-sticky
//! member <member_id> <token> <client_id> <host> <pid> <topic,topic,...>
//! topic <name> <partitions>
//! assign <member_id> <topic> <p,p,...>
//! ```
//! Fields are percent-escaped, so any member or client id fits.

use std::collections::BTreeMap;

use ottla_storage::topic::MAX_PARTITIONS;

pub type Assignment = BTreeMap<String, Vec<(String, u32)>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEntry {
    pub member_id: String,
    /// Names the member's liveness file (`members/<token>`); file-name safe.
    pub token: String,
    pub client_id: String,
    pub host: String,
    pub pid: u32,
    /// Topics the member subscribes to (a pattern already resolved), sorted.
    pub topics: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    pub generation: i64,
    /// Assignor name; empty while the group has no members.
    pub protocol: String,
    /// Sorted by member id.
    pub members: Vec<MemberEntry>,
    /// Partition counts of the subscribed topics when the assignment was made.
    pub topics: BTreeMap<String, u32>,
    /// member id -> partitions, each list sorted.
    pub assignment: Assignment,
}

fn esc(s: &str) -> String {
    if s.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c == ',' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unesc(s: &str) -> Option<String> {
    if s == "%" {
        return Some(String::new());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items.iter().map(|t| esc(t)).collect::<Vec<_>>().join(",")
}

fn unlist(s: &str) -> Option<Vec<String>> {
    if s == "-" {
        return Some(Vec::new());
    }
    s.split(',').map(unesc).collect()
}

impl GroupState {
    pub fn member(&self, member_id: &str) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.member_id == member_id)
    }

    pub fn assigned_to(&self, member_id: &str) -> &[(String, u32)] {
        self.assignment.get(member_id).map_or(&[], Vec::as_slice)
    }

    pub fn encode(&self) -> String {
        let mut s = String::from("ottla-group 1\n");
        s.push_str(&format!("generation {}\n", self.generation));
        s.push_str(&format!("protocol {}\n", esc(&self.protocol)));
        for m in &self.members {
            s.push_str(&format!(
                "member {} {} {} {} {} {}\n",
                esc(&m.member_id),
                esc(&m.token),
                esc(&m.client_id),
                esc(&m.host),
                m.pid,
                list(&m.topics)
            ));
        }
        for (t, n) in &self.topics {
            s.push_str(&format!("topic {} {n}\n", esc(t)));
        }
        for (member, tps) in &self.assignment {
            let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (t, p) in tps {
                by_topic.entry(t).or_default().push(p.to_string());
            }
            for (t, ps) in by_topic {
                s.push_str(&format!(
                    "assign {} {} {}\n",
                    esc(member),
                    esc(t),
                    ps.join(",")
                ));
            }
        }
        s
    }

    /// Parse a state file; `None` if it is not one (damaged after a power
    /// loss, or from an unknown version), which callers treat as empty.
    pub fn decode(text: &str) -> Option<GroupState> {
        let mut lines = text.lines();
        if lines.next()? != "ottla-group 1" {
            return None;
        }
        let mut st = GroupState::default();
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                // Bounded so the next generation (+1) cannot overflow.
                ["generation", g] => {
                    st.generation = g.parse().ok().filter(|g| (0..i64::MAX).contains(g))?
                }
                ["protocol", p] => st.protocol = unesc(p)?,
                ["member", id, token, client, host, pid, topics] => st.members.push(MemberEntry {
                    member_id: unesc(id)?,
                    token: unesc(token)?,
                    client_id: unesc(client)?,
                    host: unesc(host)?,
                    pid: pid.parse().ok()?,
                    topics: unlist(topics)?,
                }),
                // Partition numbers are bounded as topic metadata bounds them:
                // describing a group walks every partition of these counts.
                ["topic", t, n] => {
                    let n = n.parse().ok().filter(|n| *n <= MAX_PARTITIONS)?;
                    st.topics.insert(unesc(t)?, n);
                }
                ["assign", member, t, ps] => {
                    let t = unesc(t)?;
                    let entry = st.assignment.entry(unesc(member)?).or_default();
                    for p in ps.split(',') {
                        let p = p.parse().ok().filter(|p| *p < MAX_PARTITIONS)?;
                        entry.push((t.clone(), p));
                    }
                }
                [""] => {}
                _ => return None,
            }
        }
        st.members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        for tps in st.assignment.values_mut() {
            tps.sort();
        }
        Some(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_with_awkward_ids() {
        let mut st = GroupState {
            generation: 42,
            protocol: "range".into(),
            ..Default::default()
        };
        st.members.push(MemberEntry {
            member_id: "my app-1%,x".into(),
            token: "1-2-3".into(),
            client_id: String::new(),
            host: "héllo\nworld".into(),
            pid: 77,
            topics: vec!["a".into(), "b.c".into()],
        });
        st.members.push(MemberEntry {
            member_id: "z".into(),
            token: "9".into(),
            client_id: "c".into(),
            host: "h".into(),
            pid: 1,
            topics: vec![],
        });
        st.topics.insert("a".into(), 3);
        st.topics.insert("b.c".into(), 1);
        st.assignment.insert(
            "my app-1%,x".into(),
            vec![("a".into(), 0), ("a".into(), 2), ("b.c".into(), 0)],
        );
        st.assignment.insert("z".into(), vec![("a".into(), 1)]);
        let text = st.encode();
        assert_eq!(GroupState::decode(&text), Some(st));
    }

    #[test]
    fn damaged_files_are_rejected() {
        assert_eq!(GroupState::decode(""), None);
        assert_eq!(GroupState::decode("ottla-group 2\n"), None);
        assert_eq!(GroupState::decode("ottla-group 1\ngeneration x\n"), None);
        assert_eq!(GroupState::decode("ottla-group 1\nassign a b 1,x\n"), None);
        assert_eq!(GroupState::decode("ottla-group 1\nmember a b\n"), None);
        // Values a damaged file could hold that later arithmetic or loops
        // over partitions would choke on.
        let max = format!("ottla-group 1\ngeneration {}\n", i64::MAX);
        assert_eq!(GroupState::decode(&max), None);
        assert_eq!(GroupState::decode("ottla-group 1\ngeneration -1\n"), None);
        assert_eq!(
            GroupState::decode("ottla-group 1\ntopic t 4000000000\n"),
            None
        );
        assert_eq!(
            GroupState::decode("ottla-group 1\nassign m t 0,70000\n"),
            None
        );
        assert_eq!(
            GroupState::decode("ottla-group 1\ngeneration 3\n"),
            Some(GroupState {
                generation: 3,
                ..Default::default()
            })
        );
    }
}
