//! The ACL bindings of a data directory, durable: `<data>/.ottla/acls`.
//!
//! As the SCRAM credentials beside it (`auth::credentials`): written whole
//! by rename, mode 0600, under an exclusive lock (`acls.lock`), so
//! `ottla acls` on the directory and CreateAcls/DeleteAcls on a running
//! broker never lose each other's changes; readers take no lock (a rename
//! is atomic) and know a new version by its inode, size and mtime. The
//! file is JSON: `{"version": 1, "acls": [binding, ...]}`, bindings sorted
//! and without duplicates (Kafka's ACLs are a set).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::acl::AclBinding;
use super::private_file;

const FILE: &str = "acls";
const LOCK: &str = "acls.lock";
const VERSION: u32 = 1;

/// What identifies one version of the file: `None` when there is none.
pub type Stamp = Option<(u64, u64, i64, i64)>;

pub type Acls = BTreeSet<AclBinding>;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    acls: Vec<AclBinding>,
}

/// The ACLs of one data directory.
pub struct AclStore {
    dir: PathBuf,
}

impl AclStore {
    /// ACLs under `data_dir/.ottla/`.
    pub fn new(data_dir: &Path) -> AclStore {
        AclStore {
            dir: data_dir.join(".ottla"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The file's version now (a `stat`).
    pub fn stamp(&self) -> Result<Stamp, String> {
        let path = self.file();
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Every binding, with the version of the file they were read from.
    pub fn load(&self) -> Result<(Stamp, Acls), String> {
        let path = self.file();
        // The stamp first: a change after it is seen at the next check.
        let stamp = self.stamp()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((
                stamp,
                parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, Acls::new())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Change the file under its lock: `f` edits the bindings as the file
    /// holds them, and they are written back whole (nothing if it fails).
    pub fn update<T>(&self, f: impl FnOnce(&mut Acls) -> Result<T, String>) -> Result<T, String> {
        private_file::refuse_cluster_node(&self.dir, "ACLs", "ottla acls")?;
        private_file::locked(&self.dir, LOCK, || {
            let (_, mut acls) = self.load()?;
            let out = f(&mut acls)?;
            private_file::replace(&self.dir, FILE, &render(&acls)?)?;
            Ok(out)
        })
    }
}

fn parse(text: &str) -> Result<Acls, String> {
    let d: OnDisk = serde_json::from_str(text).map_err(|e| format!("not an ACL file: {e}"))?;
    if d.version != VERSION {
        return Err(format!(
            "ACL file version {} (this ottla reads {VERSION})",
            d.version
        ));
    }
    for b in &d.acls {
        b.validate()
            .map_err(|e| format!("invalid ACL {b:?}: {e}"))?;
    }
    Ok(d.acls.into_iter().collect())
}

fn render(acls: &Acls) -> Result<String, String> {
    let d = OnDisk {
        version: VERSION,
        acls: acls.iter().cloned().collect(),
    };
    serde_json::to_string_pretty(&d)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| format!("cannot write ACLs: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::acl::{Operation, PatternType, Permission, ResourceType};

    #[test]
    fn round_trip_private_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = AclStore::new(dir.path());
        assert_eq!(store.load().unwrap().1.len(), 0);
        let b = AclBinding {
            resource_type: ResourceType::Topic,
            name: "orders".into(),
            pattern: PatternType::Prefixed,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        store
            .update(|a| {
                a.insert(b.clone());
                a.insert(b.clone());
                Ok(())
            })
            .unwrap();
        let (stamp, acls) = AclStore::new(dir.path()).load().unwrap();
        assert!(stamp.is_some());
        assert_eq!(acls.into_iter().collect::<Vec<_>>(), vec![b]);
        let path = dir.path().join(".ottla").join(FILE);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "{\"version\": 1, \"acls\": [{\"bad\": 1}]}").unwrap();
        assert!(store.load().is_err());
        std::fs::write(&path, "garbage").unwrap();
        assert!(store.load().is_err());
    }
}
