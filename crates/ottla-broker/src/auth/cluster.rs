//! ACLs and SCRAM users of a cluster: in the metadata log, as KRaft keeps
//! them (`AccessControlEntryRecord`, `UserScramCredentialRecord` and their
//! removals), not in each node's data directory.
//!
//! - A broker forwards CreateAcls, DeleteAcls and AlterUserScramCredentials
//!   to the active controller (`ControlRequest::CreateAcls`, `DeleteAcls`,
//!   `AlterScramUsers`) after its own checks; the controller decides the
//!   records on its up-to-date image (which bindings a filter removes,
//!   which credential a deletion misses) and proposes them all or nothing
//!   ([`controller_create_acls`], [`controller_delete_acls`],
//!   [`controller_alter_scram`]).
//! - Every node applies them to its image; [`sync`] hands the image's
//!   bindings to the authorizer and its credentials to the SCRAM lookups,
//!   at every image change ([`follow`]) and right after a change this
//!   broker forwarded (so its next request sees it). DescribeAcls and
//!   DescribeUserScramCredentials answer from there.
//!
//! Only the salt, StoredKey, ServerKey and iterations travel and are
//! stored: AlterUserScramCredentials sends a salted password, and the
//! broker that received it derives the keys before forwarding.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use ottla_meta::image::MetadataImage;
use ottla_meta::records::{AclEntry, MetadataRecord, ScramEntry};
use ottla_meta::{Controller, ProposeError};

use super::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use super::acl_store::Acls;
use super::credentials::{ScramCredential, ScramMechanism, Users};
use crate::cluster::wire::{ControlReply, ScramChange};
use crate::errors::code;

/// A binding as the metadata log holds it (Kafka's codes).
pub fn entry_of(b: &AclBinding) -> AclEntry {
    AclEntry {
        resource_type: b.resource_type.code(),
        resource_name: b.name.clone(),
        pattern_type: b.pattern.code(),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: b.operation.code(),
        permission_type: b.permission.code(),
    }
}

/// The binding a log entry holds; `None` for codes this build does not
/// know (the image checked them, so only a newer build's).
pub fn binding_of(e: &AclEntry) -> Option<AclBinding> {
    Some(AclBinding {
        resource_type: ResourceType::from_code(e.resource_type)?,
        name: e.resource_name.clone(),
        pattern: PatternType::from_code(e.pattern_type)?,
        principal: e.principal.clone(),
        host: e.host.clone(),
        operation: Operation::from_code(e.operation)?,
        permission: Permission::from_code(e.permission_type)?,
    })
}

/// The image's bindings, as the authorizer takes them.
pub fn acls_of(image: &MetadataImage) -> Acls {
    image.acls.iter().filter_map(binding_of).collect()
}

/// A credential as the metadata log holds it.
pub fn scram_entry(mech: ScramMechanism, c: &ScramCredential) -> ScramEntry {
    ScramEntry {
        mechanism: mech.kafka_type(),
        salt: c.salt.clone(),
        stored_key: c.stored_key.clone(),
        server_key: c.server_key.clone(),
        iterations: c.iterations,
    }
}

/// The image's SCRAM users, as the SASL servers look them up.
pub fn users_of(image: &MetadataImage) -> Users {
    let mut users = Users::new();
    for (name, mechs) in &image.scram {
        for (m, e) in mechs {
            let Some(mech) = ScramMechanism::from_kafka_type(*m) else {
                continue;
            };
            users.entry(name.clone()).or_default().insert(
                mech,
                ScramCredential {
                    salt: e.salt.clone(),
                    stored_key: e.stored_key.clone(),
                    server_key: e.server_key.clone(),
                    iterations: e.iterations,
                },
            );
        }
    }
    users
}

/// Hands the image's ACLs and users to the broker's authorizer and SCRAM
/// lookups (nothing is rebuilt when they did not change).
pub fn sync(shared: &crate::Shared, image: &MetadataImage) {
    if shared.authorizer.in_cluster() {
        shared.authorizer.set_cluster_acls(acls_of(image));
    }
    if shared.credentials.in_cluster() {
        shared.credentials.set_cluster_users(users_of(image));
    }
}

/// Follows the node's image until the broker stops: [`sync`] at every
/// change of its ACLs or users.
pub async fn follow(
    shared: Arc<crate::Shared>,
    mut image: watch::Receiver<Arc<MetadataImage>>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut last: Option<(BTreeSet<AclEntry>, Arc<MetadataImage>)> = None;
    loop {
        let current = image.borrow_and_update().clone();
        let changed = match &last {
            None => true,
            Some((acls, img)) => *acls != current.acls || img.scram != current.scram,
        };
        if changed {
            sync(&shared, &current);
            last = Some((current.acls.clone(), current));
        }
        tokio::select! {
            r = image.changed() => if r.is_err() { return },
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

// ----- The active controller's side -----

fn failed(e: ProposeError) -> ControlReply {
    match e {
        ProposeError::NotLeader { leader } => ControlReply::NotController { leader },
        ProposeError::Stopped(_) => ControlReply::NotController { leader: None },
        ProposeError::Timeout(t) => ControlReply::Error {
            code: code::REQUEST_TIMED_OUT,
            message: format!("the metadata change did not commit within {t:?}"),
        },
        other => ControlReply::Error {
            code: code::UNKNOWN_SERVER_ERROR,
            message: other.to_string(),
        },
    }
}

/// CreateAcls: the bindings the image does not have yet, as records (an
/// existing binding is created again without a change, as in Kafka).
pub fn decide_create(image: &MetadataImage, acls: &[AclEntry]) -> Vec<MetadataRecord> {
    let mut seen = BTreeSet::new();
    acls.iter()
        .filter(|a| !image.acls.contains(a) && seen.insert((*a).clone()))
        .map(|a| MetadataRecord::AccessControlEntry(a.clone()))
        .collect()
}

/// DeleteAcls: per filter, the image's bindings it selects (a binding two
/// filters select is reported by both, removed once), and the records.
pub fn decide_delete(
    image: &MetadataImage,
    filters: &[AclFilter],
) -> (Vec<MetadataRecord>, Vec<Vec<AclEntry>>) {
    let matched: Vec<Vec<AclEntry>> = filters
        .iter()
        .map(|f| {
            image
                .acls
                .iter()
                .filter(|e| binding_of(e).is_some_and(|b| f.matches(&b)))
                .cloned()
                .collect()
        })
        .collect();
    let gone: BTreeSet<&AclEntry> = matched.iter().flatten().collect();
    let records = gone
        .into_iter()
        .map(|e| MetadataRecord::RemoveAccessControlEntry(e.clone()))
        .collect();
    (records, matched)
}

/// AlterUserScramCredentials: per user, its changes checked against the
/// image (a deletion of a credential it does not have fails the user:
/// RESOURCE_NOT_FOUND) and the records of the users that passed.
#[allow(clippy::type_complexity)]
pub fn decide_scram(
    image: &MetadataImage,
    users: &[(String, Vec<ScramChange>)],
) -> (Vec<MetadataRecord>, Vec<(String, i16, Option<String>)>) {
    let mut records = Vec::new();
    let mut results = Vec::new();
    for (name, changes) in users {
        let mut have: BTreeSet<i8> = image
            .scram
            .get(name)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        let mut mine = Vec::new();
        let mut error = None;
        for c in changes {
            match c {
                ScramChange::Delete(m) => {
                    if !have.remove(m) {
                        error = Some("Attempt to delete a user credential that does not exist");
                        break;
                    }
                    mine.push(MetadataRecord::RemoveUserScramCredential {
                        name: name.clone(),
                        mechanism: *m,
                    });
                }
                ScramChange::Upsert(e) => {
                    have.insert(e.mechanism);
                    mine.push(MetadataRecord::UserScramCredential {
                        name: name.clone(),
                        credential: e.clone(),
                    });
                }
            }
        }
        match error {
            Some(m) => results.push((name.clone(), code::RESOURCE_NOT_FOUND, Some(m.into()))),
            None => {
                records.extend(mine);
                results.push((name.clone(), code::NONE, None));
            }
        }
    }
    (records, results)
}

/// The active controller's CreateAcls.
pub async fn controller_create_acls(controller: &Controller, acls: Vec<AclEntry>) -> ControlReply {
    if let Some(bad) = acls.iter().find_map(|a| a.check().err()) {
        return ControlReply::Error {
            code: code::INVALID_REQUEST,
            message: format!("invalid ACL: {bad}"),
        };
    }
    match controller
        .propose_decided(|img| Ok(decide_create(img, &acls)))
        .await
    {
        Ok(applied) => ControlReply::Applied {
            offset: applied.offset,
        },
        Err(e) => failed(e),
    }
}

/// The active controller's DeleteAcls.
pub async fn controller_delete_acls(
    controller: &Controller,
    filters: Vec<AclFilter>,
) -> ControlReply {
    let matched = Mutex::new(Vec::new());
    let r = controller
        .propose_decided(|img| {
            let (records, m) = decide_delete(img, &filters);
            *matched.lock() = m;
            Ok(records)
        })
        .await;
    match r {
        Ok(applied) => ControlReply::AclsDeleted {
            matched: matched.into_inner(),
            offset: applied.offset,
        },
        Err(e) => failed(e),
    }
}

/// The active controller's AlterUserScramCredentials.
pub async fn controller_alter_scram(
    controller: &Controller,
    users: Vec<(String, Vec<ScramChange>)>,
) -> ControlReply {
    if let Some(bad) = users.iter().find_map(|(name, changes)| {
        if name.is_empty() {
            return Some("empty user name".to_string());
        }
        changes.iter().find_map(|c| match c {
            ScramChange::Upsert(e) => e.check().err(),
            ScramChange::Delete(_) => None,
        })
    }) {
        return ControlReply::Error {
            code: code::UNACCEPTABLE_CREDENTIAL,
            message: bad,
        };
    }
    let results = Mutex::new(Vec::new());
    let r = controller
        .propose_decided(|img| {
            let (records, res) = decide_scram(img, &users);
            *results.lock() = res;
            Ok(records)
        })
        .await;
    match r {
        Ok(applied) => ControlReply::UserResults {
            results: results.into_inner(),
            offset: applied.offset,
        },
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, op: Operation) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission: Permission::Allow,
        }
    }

    fn applied(img: &mut MetadataImage, records: &[MetadataRecord]) {
        let offset = img.offset + 1;
        img.apply_proposal(
            &ottla_meta::records::Proposal {
                records: records.to_vec(),
            },
            offset,
            1,
        )
        .expect("applies");
    }

    #[test]
    fn create_then_delete_through_the_image() {
        let mut img = MetadataImage::default();
        let a = entry_of(&binding("orders", Operation::Write));
        let b = entry_of(&binding("pay", Operation::Read));
        let records = decide_create(&img, &[a.clone(), a.clone(), b.clone()]);
        assert_eq!(records.len(), 2);
        applied(&mut img, &records);
        // Creating again: nothing to propose.
        assert!(decide_create(&img, std::slice::from_ref(&a)).is_empty());
        let acls = acls_of(&img);
        assert_eq!(acls.len(), 2);
        assert!(acls.contains(&binding("orders", Operation::Write)));
        // Two filters selecting the same binding: both report it.
        let mut by_name = AclFilter::any();
        by_name.name = Some("orders".into());
        let (records, matched) = decide_delete(&img, &[by_name, AclFilter::any()]);
        assert_eq!(matched[0], vec![a.clone()]);
        assert_eq!(matched[1].len(), 2);
        assert_eq!(records.len(), 2);
        applied(&mut img, &records);
        assert!(img.acls.is_empty());
        assert_eq!(binding_of(&a), Some(binding("orders", Operation::Write)));
    }

    const SECRET: &str = "correct horse battery staple";

    #[test]
    fn scram_changes_fail_per_user() {
        let mut img = MetadataImage::default();
        let cred = ScramCredential::from_password(ScramMechanism::Sha512, SECRET, 4096).unwrap();
        let up = ScramChange::Upsert(scram_entry(ScramMechanism::Sha512, &cred));
        let (records, results) = decide_scram(
            &img,
            &[
                ("alice".into(), vec![up.clone()]),
                ("bob".into(), vec![up.clone(), ScramChange::Delete(1)]),
            ],
        );
        assert_eq!(results[0], ("alice".into(), code::NONE, None));
        assert_eq!(results[1].1, code::RESOURCE_NOT_FOUND);
        assert_eq!(records.len(), 1, "bob's changes are all refused");
        applied(&mut img, &records);
        let users = users_of(&img);
        let got = &users["alice"][&ScramMechanism::Sha512];
        assert!(got.matches_password(ScramMechanism::Sha512, SECRET.as_bytes()));
        assert!(!users.contains_key("bob"));
        // Nothing of the password is in the image but the derived keys.
        let encoded = postcard::to_allocvec(&img).unwrap();
        assert!(!encoded
            .windows(SECRET.len())
            .any(|w| w == SECRET.as_bytes()));
        let (records, results) =
            decide_scram(&img, &[("alice".into(), vec![ScramChange::Delete(2)])]);
        assert_eq!(results[0].1, code::NONE);
        applied(&mut img, &records);
        assert!(img.scram.is_empty());
    }
}
