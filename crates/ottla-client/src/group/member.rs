//! One member's hold on a group: the shared coordinator claim, the liveness lock on
//! its member file, and one exclusive byte per owned partition.
//!
//! Invariant (enforced by the kernel, not by this code's care): a partition
//! has at most one owner, because ownership *is* the exclusive OFD lock on
//! byte `p` of `owners/<topic>`. The assignment in the state file only says
//! who should own what; a member takes a partition by locking its byte, so
//! it cannot start before the previous owner let go, whatever the files say.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ottla_storage::error::{Error, Result};

use super::assignor::Assignor;
use super::state::{GroupState, MemberEntry};
use super::GroupDir;
use ottla_storage::ofd::ByteLocks;

pub struct MemberSession {
    dir: Arc<GroupDir>,
    member_id: String,
    token: String,
    /// Held shared for the whole membership (the group's `.door` file).
    _claim: ByteLocks,
    /// Byte 0 held exclusively: "this member is alive".
    _alive: ByteLocks,
    owners: HashMap<String, ByteLocks>,
    left: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl MemberSession {
    /// Join the group: take the coordinator claim (shared), create and lock a member
    /// file, then add the member to the state (which reassigns).
    pub fn join(
        dir: Arc<GroupDir>,
        client_id: &str,
        topics: Vec<String>,
        assignor: Assignor,
    ) -> Result<MemberSession> {
        let claim = ByteLocks::open(dir.claim_path())?;
        if !claim.try_lock(0, false)? {
            return Err(Error::GroupCoordinatedByBroker {
                group: dir.group().to_string(),
            });
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let token = format!(
            "{}-{}-{:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let alive = ByteLocks::open(&dir.member_file(&token))?;
        if !alive.try_lock(0, true)? {
            return Err(Error::IllegalState(format!(
                "member file {} is locked by someone else",
                alive.path().display()
            )));
        }
        let client = if client_id.is_empty() {
            "ottla"
        } else {
            client_id
        };
        let member_id = format!("{client}-{token}");
        let mut session = MemberSession {
            dir,
            member_id: member_id.clone(),
            token: token.clone(),
            _claim: claim,
            _alive: alive,
            owners: HashMap::new(),
            left: false,
        };
        let entry = MemberEntry {
            member_id,
            token,
            client_id: client_id.to_string(),
            host: hostname(),
            pid: std::process::id(),
            topics: sorted(topics),
        };
        let joined = session.dir.update(|st| {
            if !st.members.is_empty() && st.protocol != assignor.name() {
                return Err(Error::InvalidConfig(format!(
                    "group {:?} uses partition_assignment_strategy {:?}; this member asks for {:?}",
                    session.dir.group(),
                    st.protocol,
                    assignor.name()
                )));
            }
            st.protocol = assignor.name().to_string();
            st.members.push(entry);
            Ok(())
        });
        if let Err(e) = joined {
            // Not listed: only the member file is left to remove.
            session.left = true;
            let _ = std::fs::remove_file(session.dir.member_file(&session.token));
            return Err(e);
        }
        Ok(session)
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn dir(&self) -> &Arc<GroupDir> {
        &self.dir
    }

    /// Record a new subscription (topics resolved from a pattern, or grown
    /// partitions noticed) and reassign.
    pub fn set_topics(&self, topics: Vec<String>) -> Result<GroupState> {
        let topics = sorted(topics);
        let id = self.member_id.clone();
        self.dir.update(move |st| {
            if let Some(m) = st.members.iter_mut().find(|m| m.member_id == id) {
                m.topics = topics;
            }
            Ok(())
        })
    }

    /// Take partition `p` of `topic` if its previous owner has let go.
    pub fn try_acquire(&mut self, topic: &str, p: u32) -> Result<bool> {
        let locks = match self.owners.get(topic) {
            Some(l) => l,
            None => {
                let l = ByteLocks::open(&self.dir.owners_file(topic))?;
                self.owners.entry(topic.to_string()).or_insert(l)
            }
        };
        locks.try_lock(u64::from(p), true)
    }

    /// Let go of a partition; the caller has stopped handing out its records.
    pub fn release(&mut self, topic: &str, p: u32) -> Result<()> {
        if let Some(l) = self.owners.get(topic) {
            l.unlock(u64::from(p))?;
        }
        Ok(())
    }

    /// Leave the group: release every partition, then drop out of the state
    /// (which reassigns to the others), then the liveness lock and the claim.
    pub fn leave(mut self) -> Result<()> {
        self.leave_inner()
    }

    fn leave_inner(&mut self) -> Result<()> {
        if self.left {
            return Ok(());
        }
        self.left = true;
        // Closing the descriptors releases every partition byte at once.
        self.owners.clear();
        self.dir.store().beacon().bump_groups();
        let id = self.member_id.clone();
        let r = self.dir.update(move |st| {
            st.members.retain(|m| m.member_id != id);
            st.assignment.remove(&id);
            Ok(())
        });
        let _ = std::fs::remove_file(self.dir.member_file(&self.token));
        r.map(|_| ())
    }
}

impl Drop for MemberSession {
    fn drop(&mut self) {
        // Best effort: if this fails, the kernel still drops every lock when
        // the descriptors close, and the next update prunes the entry.
        let _ = self.leave_inner();
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}
