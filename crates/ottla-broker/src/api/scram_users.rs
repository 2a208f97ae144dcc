//! DescribeUserScramCredentials (50) and AlterUserScramCredentials (51):
//! the SCRAM users of `auth::credentials`, over the wire, with Kafka's
//! checks and error codes (per user, all or nothing for each user):
//! - a user named twice (describe), or one mechanism of a user both deleted
//!   and upserted or twice (alter): DUPLICATE_RESOURCE;
//! - an empty user name, iterations outside 4096..=16384, an empty salt or
//!   salted password: UNACCEPTABLE_CREDENTIAL;
//! - a mechanism other than SCRAM-SHA-256/512: UNSUPPORTED_SASL_MECHANISM;
//! - a user (describe) or credential (delete) that does not exist:
//!   RESOURCE_NOT_FOUND.
//!
//! The client sends the salted password (never the password); the broker
//! keeps only the keys derived from it. On a cluster node the users are the
//! cluster's: the changes go to the active controller, into the metadata
//! log (`auth::cluster`), and both APIs answer from this node's image. Until ACLs (the next step of issue
//! 18) any authenticated client may alter users, as in Kafka without an
//! authorizer: docs/security.md says so.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::s;
use crate::auth::acl::Operation;
use crate::auth::cluster;
use crate::auth::credentials::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::cluster::wire::ScramChange;
use crate::dispatch::Session;
use crate::errors::code;
use crate::Shared;

pub async fn describe(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DescribeUserScramCredentialsRequest,
    _v: i16,
) -> DescribeUserScramCredentialsResponse {
    let mut r = DescribeUserScramCredentialsResponse::default();
    // ACLs: DESCRIBE on the cluster (Kafka's check).
    if !_s.authorized_cluster(shared, Operation::Describe) {
        r.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        r.error_message = Some(s("Cluster authorization failed."));
        return r;
    }
    let users = match super::blocking(|| shared.credentials.users()) {
        Ok(u) => u,
        Err(e) => {
            crate::errors::warn(&format!("SCRAM credentials unreadable: {e}"));
            r.error_code = code::UNKNOWN_SERVER_ERROR;
            r.error_message = Some(s("the broker cannot read its SCRAM credentials"));
            return r;
        }
    };
    let info = |name: &str| -> Vec<CredentialInfo> {
        users.get(name).map_or_else(Vec::new, |m| {
            m.iter()
                .map(|(mech, c)| {
                    let mut i = CredentialInfo::default();
                    i.mechanism = mech.kafka_type();
                    i.iterations = c.iterations as i32;
                    i
                })
                .collect()
        })
    };
    let result = |name: &str, error: i16, message: Option<&str>| {
        let mut x = DescribeUserScramCredentialsResult::default();
        x.user = s(name);
        x.error_code = error;
        x.error_message = message.map(s);
        if error == code::NONE {
            x.credential_infos = info(name);
        }
        x
    };
    match req.users.filter(|u| !u.is_empty()) {
        None => {
            r.results = users
                .keys()
                .map(|name| result(name, code::NONE, None))
                .collect();
        }
        Some(asked) => {
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for u in &asked {
                *count.entry(u.name.as_str()).or_default() += 1;
            }
            for (name, n) in count {
                r.results.push(if n > 1 {
                    result(
                        name,
                        code::DUPLICATE_RESOURCE,
                        Some("Cannot describe SCRAM credentials for the same user twice in a single request"),
                    )
                } else if !users.get(name).is_some_and(|m| !m.is_empty()) {
                    result(
                        name,
                        code::RESOURCE_NOT_FOUND,
                        Some("Attempt to describe a user credential that does not exist"),
                    )
                } else {
                    result(name, code::NONE, None)
                });
            }
        }
    }
    r
}

enum Change {
    Delete(ScramMechanism),
    Upsert(ScramMechanism, ScramCredential),
}

pub async fn alter(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: AlterUserScramCredentialsRequest,
    _v: i16,
) -> AlterUserScramCredentialsResponse {
    // Per user: the changes asked, or the first error found.
    let mut per_user: BTreeMap<String, Result<Vec<Change>, (i16, String)>> = BTreeMap::new();
    let mut seen: HashSet<(String, i8)> = HashSet::new();
    let mut note = |user: &str, mech: i8, change: Result<Change, (i16, String)>| {
        let entry = per_user.entry(user.to_string()).or_insert(Ok(Vec::new()));
        let change = if !seen.insert((user.to_string(), mech)) {
            Err((
                code::DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request".to_string(),
            ))
        } else {
            change
        };
        match (entry.as_mut(), change) {
            (Ok(list), Ok(c)) => list.push(c),
            (Ok(_), Err(e)) => *entry = Err(e),
            (Err(_), _) => {}
        }
    };
    let check = |user: &str, mech: i8| -> Result<ScramMechanism, (i16, String)> {
        if user.is_empty() {
            return Err((
                code::UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty".into(),
            ));
        }
        ScramMechanism::from_kafka_type(mech).ok_or_else(|| {
            (
                code::UNSUPPORTED_SASL_MECHANISM,
                "Unknown SCRAM mechanism".into(),
            )
        })
    };
    for d in &req.deletions {
        let name = d.name.as_str();
        note(
            name,
            d.mechanism,
            check(name, d.mechanism).map(Change::Delete),
        );
    }
    for u in &req.upsertions {
        let name = u.name.as_str();
        let change = check(name, u.mechanism).and_then(|mech| {
            if u.iterations < MIN_ITERATIONS as i32 {
                return Err((code::UNACCEPTABLE_CREDENTIAL, "Too few iterations".into()));
            }
            if u.iterations > MAX_ITERATIONS as i32 {
                return Err((code::UNACCEPTABLE_CREDENTIAL, "Too many iterations".into()));
            }
            if u.salt.is_empty() || u.salted_password.is_empty() {
                return Err((
                    code::UNACCEPTABLE_CREDENTIAL,
                    "Salt and salted password must not be empty".into(),
                ));
            }
            Ok(Change::Upsert(
                mech,
                ScramCredential::from_salted(
                    mech,
                    &u.salted_password,
                    &u.salt,
                    u.iterations as u32,
                ),
            ))
        });
        note(name, u.mechanism, change);
    }
    // ACLs: ALTER on the cluster, else every user is refused.
    if !_s.authorized_cluster(shared, Operation::Alter) {
        for outcome in per_user.values_mut() {
            *outcome = Err((
                code::CLUSTER_AUTHORIZATION_FAILED,
                "Cluster authorization failed.".to_string(),
            ));
        }
    }
    if let Some(node) = shared
        .cluster
        .as_ref()
        .filter(|_| shared.credentials.in_cluster())
    {
        return alter_in_cluster(shared, node, per_user).await;
    }
    // Apply under the file's lock: a deletion of a credential that does not
    // exist fails its user only.
    let outcome = super::blocking(|| {
        shared.credentials.update(|users| {
            let mut results = Vec::new();
            for (name, changes) in per_user {
                let outcome = changes.and_then(|changes| {
                    let mut mine = users.get(&name).cloned().unwrap_or_default();
                    for c in changes {
                        match c {
                            Change::Delete(m) => {
                                if mine.remove(&m).is_none() {
                                    return Err((
                                        code::RESOURCE_NOT_FOUND,
                                        "Attempt to delete a user credential that does not exist"
                                            .to_string(),
                                    ));
                                }
                            }
                            Change::Upsert(m, cred) => {
                                mine.insert(m, cred);
                            }
                        }
                    }
                    if mine.is_empty() {
                        users.remove(&name);
                    } else {
                        users.insert(name.clone(), mine);
                    }
                    Ok(())
                });
                results.push((name, outcome));
            }
            Ok(results)
        })
    });
    let mut r = AlterUserScramCredentialsResponse::default();
    match outcome {
        Ok(results) => {
            for (name, outcome) in results {
                let mut x = AlterUserScramCredentialsResult::default();
                x.user = s(&name);
                if let Err((c, m)) = outcome {
                    x.error_code = c;
                    x.error_message = Some(s(&m));
                }
                r.results.push(x);
            }
        }
        Err(e) => {
            crate::errors::warn(&format!("cannot write SCRAM credentials: {e}"));
            let names: HashSet<&str> = req
                .deletions
                .iter()
                .map(|d| d.name.as_str())
                .chain(req.upsertions.iter().map(|u| u.name.as_str()))
                .collect();
            for name in names {
                let mut x = AlterUserScramCredentialsResult::default();
                x.user = s(name);
                // KAFKA_STORAGE_ERROR (a disk the broker cannot write): with
                // UNKNOWN_SERVER_ERROR, confluent-kafka 2.16's future for the
                // user never completes.
                x.error_code = code::KAFKA_STORAGE_ERROR;
                x.error_message = Some(s("the broker cannot write its SCRAM credentials"));
                r.results.push(x);
            }
        }
    }
    r
}

/// AlterUserScramCredentials on a cluster node: the users whose changes
/// passed the checks above go to the active controller, which stores the
/// derived keys in the metadata log; this broker's SCRAM lookups have them
/// when it answers.
async fn alter_in_cluster(
    shared: &Shared,
    node: &Arc<crate::cluster::ClusterNode>,
    per_user: BTreeMap<String, Result<Vec<Change>, (i16, String)>>,
) -> AlterUserScramCredentialsResponse {
    let mut outcomes: BTreeMap<String, (i16, Option<String>)> = BTreeMap::new();
    let mut forward = Vec::new();
    for (name, changes) in per_user {
        match changes {
            Err((c, m)) => {
                outcomes.insert(name, (c, Some(m)));
            }
            Ok(changes) => {
                let wire = changes
                    .iter()
                    .map(|c| match c {
                        Change::Delete(m) => ScramChange::Delete(m.kafka_type()),
                        Change::Upsert(m, cred) => {
                            ScramChange::Upsert(cluster::scram_entry(*m, cred))
                        }
                    })
                    .collect();
                forward.push((name, wire));
            }
        }
    }
    if !forward.is_empty() {
        let names: Vec<String> = forward.iter().map(|(n, _)| n.clone()).collect();
        match node.alter_scram_users(forward).await {
            Ok(results) => {
                for (name, c, m) in results {
                    outcomes.insert(name, (c, m));
                }
            }
            Err((c, m)) => {
                for name in names {
                    outcomes.insert(name, (c, Some(m.clone())));
                }
            }
        }
        cluster::sync(shared, &node.image());
    }
    let mut r = AlterUserScramCredentialsResponse::default();
    for (name, (c, m)) in outcomes {
        let mut x = AlterUserScramCredentialsResult::default();
        x.user = s(&name);
        x.error_code = c;
        x.error_message = m.as_deref().map(s);
        r.results.push(x);
    }
    r
}
