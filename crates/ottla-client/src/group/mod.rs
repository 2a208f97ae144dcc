//! Consumer groups without a server: members on one data directory (in one
//! process or many) agree on who owns which partition through files and
//! kernel locks under `.ottla/groups/`.
//!
//! * [`GroupDir`]: a group's files, and [`GroupDir::update`], the only way
//!   the state file changes (under the group lock: prune dead members, apply
//!   a change, recompute the assignment, bump the generation).
//! * [`member::MemberSession`]: one member's locks (coordinator claim, liveness,
//!   partition ownership).
//! * [`assignor`], [`state`]: pure assignment and the state file format.
//! * [`admin`]: list, describe, delete, reset offsets.
//!
//! The design, and why ownership can never overlap, is in
//! docs/design/groups.md.

pub mod admin;
pub mod assignor;
pub mod member;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ottla_storage::error::{Error, IoContext, Result};
use ottla_storage::fsutil::write_replace;
use ottla_storage::store::Store;

use assignor::Assignor;
use ottla_storage::ofd::{ByteGuard, ByteLocks};
use state::GroupState;

/// Group ids may hold any character; file names may not. Reversible
/// (percent-escapes), so distinct groups never share files.
pub fn group_file_stem(group: &str) -> String {
    let mut s = String::with_capacity(group.len());
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02x}"));
        }
    }
    if s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

/// `<dir>/.ottla/groups/<group>.door`: the group's coordinator claim, shared with the broker
/// (contracts: embedded members hold byte 0 shared, the broker exclusive).
pub fn claim_path(store: &Store, group: &str) -> PathBuf {
    store
        .groups_dir()
        .join(format!("{}.door", group_file_stem(group)))
}

/// A group's files:
///
/// ```text
/// .ottla/groups/<group>.door        the coordinator claim (broker or embedded members)
/// .ottla/groups/<group>/name        the group id, verbatim
/// .ottla/groups/<group>/group.lock  byte 0: serialises rewrites of `state`
/// .ottla/groups/<group>/state       generation, members, assignment
/// .ottla/groups/<group>/members/<token>  held (byte 0) by a live member
/// .ottla/groups/<group>/owners/<topic>   byte p held by partition p's owner
/// ```
pub struct GroupDir {
    store: Arc<Store>,
    group: String,
    dir: PathBuf,
    claim: PathBuf,
    lock: ByteLocks,
}

impl GroupDir {
    pub fn open(store: &Arc<Store>, group: &str) -> Result<GroupDir> {
        if group.is_empty() {
            return Err(Error::InvalidConfig("group_id must not be empty".into()));
        }
        let dir = store.groups_dir().join(group_file_stem(group));
        for sub in ["members", "owners"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).ctx("create group directory", &d)?;
        }
        let name = dir.join("name");
        if !name.exists() {
            write_replace(&name, group.as_bytes())?;
        }
        Ok(GroupDir {
            lock: ByteLocks::open(&dir.join("group.lock"))?,
            claim: claim_path(store, group),
            store: store.clone(),
            group: group.to_string(),
            dir,
        })
    }

    /// The group directory if it exists (read-only callers never create it).
    pub fn existing(store: &Arc<Store>, group: &str) -> Result<Option<GroupDir>> {
        if group.is_empty() {
            return Ok(None);
        }
        if !store.groups_dir().join(group_file_stem(group)).is_dir() {
            return Ok(None);
        }
        GroupDir::open(store, group).map(Some)
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn claim_path(&self) -> &Path {
        &self.claim
    }

    fn member_file(&self, token: &str) -> PathBuf {
        self.dir.join("members").join(token)
    }

    fn owners_file(&self, topic: &str) -> PathBuf {
        self.dir.join("owners").join(topic)
    }

    /// The state as last written. No lock is needed: the file is replaced
    /// by rename. A missing or damaged file is an empty group.
    pub fn read_state(&self) -> Result<GroupState> {
        let path = self.dir.join("state");
        match fs::read(&path) {
            // Bytes that are not UTF-8 are as damaged as any other.
            Ok(bytes) => Ok(std::str::from_utf8(&bytes)
                .ok()
                .and_then(GroupState::decode)
                .unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GroupState::default()),
            Err(e) => Err(Error::io("read group state", &path, e)),
        }
    }

    /// Whether the member holding `token` is alive: it holds byte 0 of its
    /// member file from before it is listed in the state until after it is
    /// removed, and the kernel drops the lock when its process dies.
    pub fn member_alive(&self, token: &str) -> Result<bool> {
        match ByteLocks::open_existing(&self.member_file(token))? {
            Some(l) => l.held_elsewhere(0),
            None => Ok(false),
        }
    }

    /// Whether any partition byte of `topic` is held by some member (used by
    /// describe to tell a settled group from one mid-rebalance).
    pub fn partition_held(&self, topic: &str, partition: u32) -> Result<bool> {
        match ByteLocks::open_existing(&self.owners_file(topic))? {
            Some(l) => l.held_elsewhere(u64::from(partition)),
            None => Ok(false),
        }
    }

    /// Change the state under the group lock. Dead members are pruned
    /// first (their partitions were already released by the kernel), then
    /// `change` runs, then the assignment is recomputed by the group's
    /// assignor. If anything differs, the generation moves, the file is
    /// replaced and every member on the directory is woken.
    ///
    /// Invariant: the state file is only ever written here, with the lock
    /// held, so updates never interleave.
    pub fn update(&self, change: impl FnOnce(&mut GroupState) -> Result<()>) -> Result<GroupState> {
        let _guard = ByteGuard::lock(&self.lock, 0)?;
        let mut st = self.read_state()?;
        let before = st.clone();
        let mut dead = Vec::new();
        for m in &st.members {
            if !self.member_alive(&m.token)? {
                dead.push(m.clone());
            }
        }
        for d in &dead {
            st.members.retain(|m| m.member_id != d.member_id);
            st.assignment.remove(&d.member_id);
            // Only a dead member's file: its lock is free, nobody will take
            // it again (tokens are never reused).
            let _ = fs::remove_file(self.member_file(&d.token));
        }
        change(&mut st)?;
        st.members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        if st.members.is_empty() {
            st.protocol.clear();
            st.topics.clear();
            st.assignment.clear();
        } else {
            let assignor = Assignor::parse(&st.protocol)?;
            let mut topics = BTreeMap::new();
            for m in &st.members {
                for t in &m.topics {
                    if topics.contains_key(t) {
                        continue;
                    }
                    if let Ok(Some(topic)) = self.store.topic(t) {
                        topics.insert(t.clone(), topic.partitions);
                    }
                }
            }
            let members: Vec<(String, BTreeSet<String>)> = st
                .members
                .iter()
                .map(|m| (m.member_id.clone(), m.topics.iter().cloned().collect()))
                .collect();
            st.assignment = assignor.assign(&members, &topics, &st.assignment);
            // As the file stores it (no line for an empty list), so an
            // update that changes nothing compares equal and writes nothing.
            st.assignment.retain(|_, v| !v.is_empty());
            st.topics = topics;
        }
        if st != before {
            st.generation = before.generation.saturating_add(1);
            write_replace(&self.dir.join("state"), st.encode().as_bytes())?;
            self.store.beacon().bump_groups();
        }
        Ok(st)
    }

    /// Remove the state of a group without members (Admin.delete_group).
    pub(crate) fn clear_state(&self) -> Result<()> {
        let _guard = ByteGuard::lock(&self.lock, 0)?;
        let path = self.dir.join("state");
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove group state", &path, e)),
        }
    }
}

/// Names of groups with a state file listing at least one live member.
pub fn groups_with_live_members(store: &Arc<Store>) -> Result<Vec<String>> {
    let root = store.groups_dir();
    let mut out = Vec::new();
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list groups", &root, e)),
    };
    for entry in entries {
        let entry = entry.ctx("list groups", &root)?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Ok(name) = fs::read_to_string(path.join("name")) else {
            continue;
        };
        let Some(dir) = GroupDir::existing(store, &name)? else {
            continue;
        };
        let st = dir.read_state()?;
        for m in &st.members {
            if dir.member_alive(&m.token)? {
                out.push(name);
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
