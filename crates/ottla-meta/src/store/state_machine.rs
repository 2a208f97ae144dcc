//! The state machine: the metadata image, applied from committed entries,
//! published to watchers, and snapshotted to disk: openraft's
//! [`RaftStateMachine`].
//!
//! The image lives in memory; the snapshot file is what survives a restart
//! (the entries after it are applied again from the log once the node learns
//! they are committed). A snapshot file is the small-file layout (`OTMS`)
//! around the postcard encoding of [`StoredSnapshot`]; its `data` (also what
//! is sent to a lagging follower) is one version byte (3; 2 and 1 are still read) and the postcard
//! encoding of the [`MetadataImage`].

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::file::{frame, read_if_exists, unframe, write_atomic};
use super::{decode, encode, StoreError};
use crate::image::{Applied, ApplyOutcome, MetadataImage};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SNAPSHOT_MAGIC: &[u8; 4] = b"OTMS";
/// 3: the image holds the cluster's ACLs and SCRAM credentials. Version 2
/// (partitions with their reassignment, no ACLs or users) and version 1 (no
/// reassignments) are still read.
const IMAGE_VERSION: u8 = 3;
const IMAGE_VERSION_2: u8 = 2;
const IMAGE_VERSION_1: u8 = 1;

/// The snapshot file's payload.
#[derive(Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

struct State {
    image: MetadataImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<StoredSnapshot>,
    snapshots_built: u64,
}

/// The state machine (and snapshot builder: clones share the same state).
#[derive(Clone)]
pub struct StateMachine {
    root: PathBuf,
    state: Arc<Mutex<State>>,
    published: Arc<watch::Sender<Arc<MetadataImage>>>,
}

/// Encodes an image as snapshot data.
pub fn encode_image(image: &MetadataImage) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![IMAGE_VERSION];
    out.extend_from_slice(&encode(image)?);
    Ok(out)
}

/// Decodes snapshot data (from disk or from the leader).
pub fn decode_image(data: &[u8], path: &Path) -> Result<MetadataImage, StoreError> {
    match data.first() {
        Some(&IMAGE_VERSION) => decode(&data[1..], path, 1),
        Some(&IMAGE_VERSION_2) => {
            decode::<crate::image::v2::MetadataImageV2>(&data[1..], path, 1).map(Into::into)
        }
        Some(&IMAGE_VERSION_1) => {
            decode::<crate::image::v1::MetadataImageV1>(&data[1..], path, 1).map(Into::into)
        }
        Some(&v) => Err(StoreError::UnknownVersion {
            path: path.to_path_buf(),
            version: v,
        }),
        None => Err(StoreError::corrupt(path, 0, "empty snapshot data")),
    }
}

impl StateMachine {
    /// Opens the state machine under `root`: the last snapshot, if any.
    pub fn open(root: &Path) -> Result<StateMachine, StoreError> {
        let path = root.join("snapshot");
        let (image, last_applied, membership, snapshot) = match read_if_exists(&path)? {
            Some(bytes) => {
                let stored: StoredSnapshot =
                    decode(unframe(SNAPSHOT_MAGIC, &bytes, &path)?, &path, 16)?;
                let image = decode_image(&stored.data, &path)?;
                (
                    image,
                    stored.meta.last_log_id,
                    stored.meta.last_membership.clone(),
                    Some(stored),
                )
            }
            None => (
                MetadataImage::default(),
                None,
                StoredMembership::default(),
                None,
            ),
        };
        let (tx, _) = watch::channel(Arc::new(image.clone()));
        Ok(StateMachine {
            root: root.to_path_buf(),
            state: Arc::new(Mutex::new(State {
                image,
                last_applied,
                membership,
                snapshot,
                snapshots_built: 0,
            })),
            published: Arc::new(tx),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated only after its files: a panic cannot leave it
        // half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The image as last published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.published.subscribe()
    }

    fn save(&self, stored: &StoredSnapshot) -> Result<(), StoreError> {
        write_atomic(
            &self.root,
            "snapshot",
            &frame(SNAPSHOT_MAGIC, &encode(stored)?)?,
        )
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (image, last_applied, membership, seq) = {
            let mut g = self.lock();
            g.snapshots_built += 1;
            (
                g.image.clone(),
                g.last_applied,
                g.membership.clone(),
                g.snapshots_built,
            )
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let sig = Some(meta.signature());
        let data = encode_image(&image)
            .map_err(|e| e.to_raft(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        {
            // Saved under the lock, and only if it is not older than the
            // snapshot in place: a snapshot installed from the leader while
            // this one was being built must stay (the log is purged up to it).
            let mut g = self.lock();
            let newer = match &g.snapshot {
                Some(cur) => cur.meta.last_log_id <= meta.last_log_id,
                None => true,
            };
            if newer {
                self.save(&stored)
                    .map_err(|e| e.to_raft(ErrorSubject::Snapshot(sig), ErrorVerb::Write))?;
                g.snapshot = Some(stored);
            }
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let g = self.lock();
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let image = {
            let mut g = self.lock();
            for entry in entries {
                let (index, term) = (entry.log_id.index, entry.log_id.leader_id.term);
                g.last_applied = Some(entry.log_id);
                let outcome = match entry.payload {
                    EntryPayload::Normal(proposal) => {
                        g.image.apply_proposal(&proposal, index, term)
                    }
                    EntryPayload::Blank => {
                        g.image.offset = index;
                        g.image.epoch = term;
                        Ok(Applied {
                            offset: index,
                            epoch: term,
                        })
                    }
                    EntryPayload::Membership(m) => {
                        g.membership = StoredMembership::new(Some(entry.log_id), m);
                        g.image.offset = index;
                        g.image.epoch = term;
                        Ok(Applied {
                            offset: index,
                            epoch: term,
                        })
                    }
                };
                out.push(outcome);
            }
            Arc::new(g.image.clone())
        };
        self.published.send_replace(image);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let data = snapshot.into_inner();
        let image = decode_image(&data, &self.root.join("snapshot"))
            .map_err(|e| e.to_raft(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Read))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let published = {
            let mut g = self.lock();
            self.save(&stored)
                .map_err(|e| e.to_raft(ErrorSubject::Snapshot(sig), ErrorVerb::Write))?;
            g.image = image;
            g.last_applied = meta.last_log_id;
            g.membership = meta.last_membership.clone();
            g.snapshot = Some(stored);
            Arc::new(g.image.clone())
        };
        self.published.send_replace(published);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let g = self.lock();
        Ok(g.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("snapshot"),
            b"OTMS\x01\0\0\0\x04\0\0\0\0\0\0\0abcd",
        )
        .unwrap();
        assert!(matches!(
            StateMachine::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_image(&[9, 1, 2], Path::new("x")),
            Err(StoreError::UnknownVersion { version: 9, .. })
        ));
    }
}
