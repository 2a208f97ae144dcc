//! The authorizer: may this principal, from this host, do this operation
//! on this resource? Kafka's `StandardAuthorizer` semantics over the ACL
//! bindings of the data directory (`auth::acl_store`).
//!
//! - No authorizer configured (the default, Kafka's `authorizer.class.name`
//!   unset): everything is allowed, and Create/Describe/DeleteAcls answer
//!   SECURITY_DISABLED.
//! - `super.users` (`User:admin;User:broker`) may do everything.
//! - Otherwise the bindings that apply to the resource are those with its
//!   type and its name (LITERAL), the wildcard name `*` (LITERAL), or a
//!   prefix of its name (PREFIXED); of those, the ones for the principal or
//!   `User:*` and for the client's address or `*` decide: any DENY of the
//!   operation (or ALL) refuses, else any ALLOW of it (or ALL, or an
//!   operation implying it: READ, WRITE, DELETE and ALTER imply DESCRIBE,
//!   ALTER_CONFIGS implies DESCRIBE_CONFIGS) allows, else it is refused,
//!   unless `allow.everyone.if.no.acl.found` is set and no binding at all
//!   applies to the resource.
//!
//! A check is a few hash lookups (literal name, `*`, and the resource
//! name's prefixes of the lengths prefixed bindings have) on an index
//! rebuilt whenever the bindings change: at once for CreateAcls and
//! DeleteAcls, within [`RELOAD_CHECK`] for `ottla acls` on the directory of
//! a running broker (a `stat` of the file at most that often).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use super::acl_store::{AclStore, Acls, Stamp};
use super::principal::Principal;

pub use super::acl::CLUSTER_NAME;

/// How often a running broker looks for a change of the ACL file made by
/// another process (`ottla acls`).
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The authorizer's settings (Kafka's names in the comments).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// `super.users`: principals (`User:admin`) allowed everything.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found` (false, as in Kafka).
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    /// Kafka's `super.users` syntax: principals separated by `;`.
    pub fn parse_super_users(text: &str) -> Result<Vec<String>, String> {
        text.split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                super::acl::parse_principal(p)?;
                Ok(p.to_string())
            })
            .collect()
    }
}

/// The broker's authorizer: none (allow everything) or the standard one.
pub struct Authorizer {
    standard: Option<Standard>,
}

struct Standard {
    config: AuthorizerConfig,
    /// The data directory's ACLs; `None` on a cluster node, whose ACLs are
    /// the metadata image's (`acls`, kept current by `auth::cluster`).
    store: Option<AclStore>,
    /// A cluster node's bindings, as the image last had them.
    acls: RwLock<Arc<Acls>>,
    index: RwLock<Arc<Index>>,
    /// The file version `index` was built from.
    stamp: Mutex<Stamp>,
    /// Milliseconds since `born` of the last look at the file.
    checked_ms: AtomicU64,
    born: Instant,
}

/// Why an ACL change was refused (CreateAcls, DeleteAcls).
pub enum AclError {
    /// No authorizer is configured: SECURITY_DISABLED.
    Disabled,
    /// The file could not be read or written.
    Io(String),
}

impl Authorizer {
    /// No authorizer: everything is allowed.
    pub fn allow_all() -> Authorizer {
        Authorizer { standard: None }
    }

    /// The standard authorizer over the ACLs of `data_dir`; fails if the
    /// file is damaged (a broker must not start with ACLs it cannot read).
    pub fn standard(data_dir: &Path, config: AuthorizerConfig) -> Result<Authorizer, String> {
        for p in &config.super_users {
            super::acl::parse_principal(p)?;
        }
        let store = AclStore::new(data_dir);
        let (stamp, acls) = store.load()?;
        Ok(Authorizer {
            standard: Some(Standard {
                config,
                store: Some(store),
                acls: RwLock::new(Arc::new(Acls::new())),
                index: RwLock::new(Arc::new(Index::build(&acls))),
                stamp: Mutex::new(stamp),
                checked_ms: AtomicU64::new(0),
                born: Instant::now(),
            }),
        })
    }

    /// The standard authorizer of a cluster node: the bindings are the
    /// cluster's (the metadata log's), none until the image is followed
    /// ([`Authorizer::set_cluster_acls`]), so nothing but super users is
    /// allowed before (unless `allow.everyone.if.no.acl.found`).
    pub fn standard_in_cluster(config: AuthorizerConfig) -> Result<Authorizer, String> {
        for p in &config.super_users {
            super::acl::parse_principal(p)?;
        }
        Ok(Authorizer {
            standard: Some(Standard {
                config,
                store: None,
                acls: RwLock::new(Arc::new(Acls::new())),
                index: RwLock::new(Arc::new(Index::default())),
                stamp: Mutex::new(None),
                checked_ms: AtomicU64::new(0),
                born: Instant::now(),
            }),
        })
    }

    /// Whether the bindings are the cluster's (changes go to the active
    /// controller, not to a file).
    pub fn in_cluster(&self) -> bool {
        self.standard.as_ref().is_some_and(|s| s.store.is_none())
    }

    /// A cluster node's bindings, as its metadata image now holds them:
    /// the index is rebuilt if they changed.
    pub fn set_cluster_acls(&self, acls: Acls) {
        let Some(std) = &self.standard else {
            return;
        };
        if std.store.is_some() {
            return;
        }
        let mut current = std.acls.write();
        if **current != acls {
            *std.index.write() = Arc::new(Index::build(&acls));
            *current = Arc::new(acls);
        }
    }

    pub fn enabled(&self) -> bool {
        self.standard.is_some()
    }

    /// May `principal`, connected from `host`, do `op` on the resource?
    pub fn authorize(
        &self,
        principal: &Principal,
        host: IpAddr,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        let Some(std) = &self.standard else {
            return true;
        };
        if std.is_super(principal) {
            return true;
        }
        let index = std.current();
        match index.decide(principal, host, op, resource, name) {
            Decision::Allow => true,
            Decision::Deny => false,
            Decision::NoAcl => std.config.allow_everyone_if_no_acl_found,
        }
    }

    /// Whether `principal` may do `op` on some resource of the type (Kafka's
    /// `authorizeByResourceType`, which InitProducerId asks for WRITE on
    /// topics): an ALLOW binding of the type applies to it, and no DENY of
    /// the operation on the wildcard resource `*` does.
    pub fn authorize_any(
        &self,
        principal: &Principal,
        host: IpAddr,
        op: Operation,
        resource: ResourceType,
    ) -> bool {
        let Some(std) = &self.standard else {
            return true;
        };
        if std.is_super(principal) {
            return true;
        }
        let index = std.current();
        let literal = index.literal.get(&resource);
        let prefixed = index.prefixed.get(&resource).map(|(m, _)| m);
        let wildcard_denied = literal
            .and_then(|m| m.get(super::acl::WILDCARD))
            .is_some_and(|es| {
                es.iter().any(|e| {
                    e.permission == Permission::Deny
                        && e.operation.denies(op)
                        && e.applies(principal, host)
                })
            });
        if wildcard_denied {
            return false;
        }
        let mut all = literal.into_iter().chain(prefixed).flat_map(|m| m.values());
        let mut any = false;
        let allowed = all.any(|es| {
            any |= !es.is_empty();
            es.iter().any(|e| {
                e.permission == Permission::Allow
                    && e.operation.allows(op)
                    && e.applies(principal, host)
            })
        });
        allowed || (!any && std.config.allow_everyone_if_no_acl_found)
    }

    /// Kafka's authorized-operations bitfield of the resource: bit `code`
    /// set for each operation its type defines that is allowed.
    pub fn authorized_operations(
        &self,
        principal: &Principal,
        host: IpAddr,
        resource: ResourceType,
        name: &str,
    ) -> i32 {
        resource
            .operations()
            .iter()
            .filter(|op| self.authorize(principal, host, **op, resource, name))
            .fold(0i32, |bits, op| bits | (1 << op.code()))
    }

    /// The bindings `filter` selects (DescribeAcls).
    pub fn describe(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, AclError> {
        let std = self.standard.as_ref().ok_or(AclError::Disabled)?;
        let Some(store) = &std.store else {
            let acls = std.acls.read().clone();
            return Ok(acls.iter().filter(|b| filter.matches(b)).cloned().collect());
        };
        let (_, acls) = store.load().map_err(AclError::Io)?;
        Ok(acls.into_iter().filter(|b| filter.matches(b)).collect())
    }

    /// Store `bindings` (CreateAcls): all of them or, on an I/O error, none.
    pub fn create(&self, bindings: &[AclBinding]) -> Result<(), AclError> {
        let std = self.standard.as_ref().ok_or(AclError::Disabled)?;
        let store = std.store.as_ref().ok_or_else(cluster_owned)?;
        let r = store.update(|acls| {
            acls.extend(bindings.iter().cloned());
            Ok(())
        });
        std.reload();
        r.map_err(AclError::Io)
    }

    /// Remove what each filter selects (DeleteAcls): per filter, the
    /// bindings it removed.
    pub fn delete(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, AclError> {
        let std = self.standard.as_ref().ok_or(AclError::Disabled)?;
        let store = std.store.as_ref().ok_or_else(cluster_owned)?;
        let r = store.update(|acls| Ok(delete_matching(acls, filters)));
        std.reload();
        r.map_err(AclError::Io)
    }

    /// How many bindings the index holds (0 without an authorizer).
    pub fn len(&self) -> usize {
        self.standard.as_ref().map_or(0, |s| s.current().count)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn cluster_owned() -> AclError {
    AclError::Io("a cluster node's ACLs live in the cluster's metadata log".into())
}

/// Remove from `acls` what each filter selects; per filter, what it
/// removed (a binding two filters select is reported by both, as Kafka).
pub fn delete_matching(acls: &mut Acls, filters: &[AclFilter]) -> Vec<Vec<AclBinding>> {
    let out: Vec<Vec<AclBinding>> = filters
        .iter()
        .map(|f| acls.iter().filter(|b| f.matches(b)).cloned().collect())
        .collect();
    for gone in out.iter().flatten() {
        acls.remove(gone);
    }
    out
}

impl Standard {
    fn is_super(&self, principal: &Principal) -> bool {
        self.config.super_users.iter().any(|s| {
            s.split_once(':')
                .is_some_and(|(k, n)| k == principal.kind && n == principal.name)
        })
    }

    /// The index, reloaded first if the file changed (looked at no more
    /// than once per `RELOAD_CHECK`).
    fn current(&self) -> Arc<Index> {
        if self.store.is_none() {
            return self.index.read().clone();
        }
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= RELOAD_CHECK.as_millis() as u64
            && self
                .checked_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let changed = match self.store.as_ref().map(AclStore::stamp) {
                Some(Ok(s)) => s != *self.stamp.lock(),
                _ => false,
            };
            if changed {
                self.reload();
            }
        }
        self.index.read().clone()
    }

    /// Rebuild the index from the file. A damaged file keeps the last good
    /// bindings (and says so), never an empty set that would change what
    /// is allowed.
    fn reload(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let mut stamp = self.stamp.lock();
        match store.load() {
            Ok((s, acls)) => {
                *self.index.write() = Arc::new(Index::build(&acls));
                *stamp = s;
            }
            Err(e) => crate::errors::warn(&format!(
                "cannot read the ACLs, keeping the previous ones: {e}"
            )),
        }
    }
}

/// One binding as the index keeps it.
struct Entry {
    principal_kind: String,
    principal_name: String,
    /// `None`: every host. A host that is not an IP address matches none.
    host: Option<Result<IpAddr, String>>,
    operation: Operation,
    permission: Permission,
}

impl Entry {
    fn applies(&self, principal: &Principal, host: IpAddr) -> bool {
        let who = self.principal_kind == principal.kind
            && (self.principal_name == principal.name || self.principal_name == "*");
        let from = match &self.host {
            None => true,
            Some(Ok(ip)) => same_ip(*ip, host),
            Some(Err(_)) => false,
        };
        who && from
    }
}

/// 127.0.0.1 is also `::ffff:127.0.0.1` (a dual-stack listener's view).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Bindings of one resource type by name (or prefix).
type ByName = HashMap<String, Vec<Entry>>;

#[derive(Default)]
struct Index {
    /// Per resource type, LITERAL bindings by name (`*` included).
    literal: HashMap<ResourceType, ByName>,
    /// Per resource type, PREFIXED bindings by prefix, and the distinct
    /// prefix lengths (bytes), shortest first.
    prefixed: HashMap<ResourceType, (ByName, Vec<usize>)>,
    count: usize,
}

enum Decision {
    Allow,
    Deny,
    NoAcl,
}

impl Index {
    fn build(acls: &Acls) -> Index {
        let mut idx = Index::default();
        for b in acls {
            let (kind, name) = b.principal.split_once(':').unwrap_or(("User", ""));
            let e = Entry {
                principal_kind: kind.to_string(),
                principal_name: name.to_string(),
                host: if b.host == super::acl::WILDCARD {
                    None
                } else {
                    Some(b.host.parse::<IpAddr>().map_err(|_| b.host.clone()))
                },
                operation: b.operation,
                permission: b.permission,
            };
            match b.pattern {
                PatternType::Prefixed => {
                    let (map, lens) = idx.prefixed.entry(b.resource_type).or_default();
                    map.entry(b.name.clone()).or_default().push(e);
                    if !lens.contains(&b.name.len()) {
                        lens.push(b.name.len());
                        lens.sort_unstable();
                    }
                }
                _ => idx
                    .literal
                    .entry(b.resource_type)
                    .or_default()
                    .entry(b.name.clone())
                    .or_default()
                    .push(e),
            }
            idx.count += 1;
        }
        idx
    }

    fn decide(
        &self,
        principal: &Principal,
        host: IpAddr,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> Decision {
        let mut found = false;
        let mut allowed = false;
        let mut consider = |entries: &[Entry]| -> bool {
            found |= !entries.is_empty();
            for e in entries {
                if !e.applies(principal, host) {
                    continue;
                }
                match e.permission {
                    Permission::Deny if e.operation.denies(op) => return true,
                    Permission::Allow if e.operation.allows(op) => allowed = true,
                    _ => {}
                }
            }
            false
        };
        if let Some(by_name) = self.literal.get(&resource) {
            for n in [name, super::acl::WILDCARD] {
                if let Some(entries) = by_name.get(n) {
                    if consider(entries) {
                        return Decision::Deny;
                    }
                }
            }
        }
        if let Some((by_prefix, lens)) = self.prefixed.get(&resource) {
            for &len in lens {
                if len > name.len() {
                    break;
                }
                let Some(prefix) = name.get(..len) else {
                    continue;
                };
                if let Some(entries) = by_prefix.get(prefix) {
                    if consider(entries) {
                        return Decision::Deny;
                    }
                }
            }
        }
        if allowed {
            Decision::Allow
        } else if found {
            Decision::Deny
        } else {
            Decision::NoAcl
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn authz(acls: &[AclBinding], cfg: AuthorizerConfig) -> (tempfile::TempDir, Authorizer) {
        let dir = tempfile::tempdir().unwrap();
        let a = Authorizer::standard(dir.path(), cfg).unwrap();
        if !acls.is_empty() {
            a.create(acls).ok().unwrap();
        }
        (dir, a)
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn allow_deny_implied_prefixed_wildcard() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let alice = Principal::user("alice");
        let bob = Principal::user("bob");
        let (_d, a) = authz(
            &[
                bind(Topic, "a", Literal, "User:alice", Write, Allow),
                bind(Topic, "pre-", Prefixed, "User:alice", Read, Allow),
                bind(Topic, "pre-secret", Literal, "User:alice", Read, Deny),
                bind(Topic, "*", Literal, "User:*", Describe, Allow),
                bind(Group, "g", Literal, "User:bob", All, Allow),
            ],
            AuthorizerConfig::default(),
        );
        assert!(a.authorize(&alice, LOCAL, Write, Topic, "a"));
        assert!(!a.authorize(&alice, LOCAL, Write, Topic, "b"));
        assert!(!a.authorize(&alice, LOCAL, Read, Topic, "a"));
        // WRITE implies DESCRIBE; `*` allows every user DESCRIBE anyway.
        assert!(a.authorize(&bob, LOCAL, Describe, Topic, "zzz"));
        assert!(a.authorize(&alice, LOCAL, Read, Topic, "pre-x"));
        assert!(!a.authorize(&alice, LOCAL, Read, Topic, "pr"));
        // DENY wins over the prefixed ALLOW; a denied READ leaves DESCRIBE.
        assert!(!a.authorize(&alice, LOCAL, Read, Topic, "pre-secret"));
        assert!(a.authorize(&alice, LOCAL, Describe, Topic, "pre-secret"));
        assert!(a.authorize(&bob, LOCAL, Read, Group, "g"));
        assert!(!a.authorize(&alice, LOCAL, Read, Group, "g"));
        // No ACL for the resource: refused unless allow.everyone.if.no.acl.found.
        assert!(!a.authorize(&alice, LOCAL, Read, Group, "other"));
        assert_eq!(
            a.authorized_operations(&alice, LOCAL, Topic, "a"),
            (1 << 4) | (1 << 8)
        );
    }

    #[test]
    fn super_users_hosts_and_no_acl_found() {
        let (_d, a) = authz(
            &[AclBinding {
                host: "10.0.0.1".into(),
                ..bind(
                    ResourceType::Topic,
                    "t",
                    PatternType::Literal,
                    "User:alice",
                    Operation::Read,
                    Permission::Allow,
                )
            }],
            AuthorizerConfig {
                super_users: vec!["User:admin".into()],
                allow_everyone_if_no_acl_found: true,
            },
        );
        let alice = Principal::user("alice");
        assert!(a.authorize(
            &Principal::user("admin"),
            LOCAL,
            Operation::Alter,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
        assert!(!a.authorize(&alice, LOCAL, Operation::Read, ResourceType::Topic, "t"));
        assert!(a.authorize(
            &alice,
            "10.0.0.1".parse().unwrap(),
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        assert!(a.authorize(
            &alice,
            "::ffff:10.0.0.1".parse().unwrap(),
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        // No ACL on `u` at all: everyone may.
        assert!(a.authorize(&alice, LOCAL, Operation::Read, ResourceType::Topic, "u"));
    }

    #[test]
    fn deletes_take_effect_and_other_processes_are_seen() {
        let alice = Principal::user("alice");
        let allow = bind(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        );
        let (dir, a) = authz(std::slice::from_ref(&allow), AuthorizerConfig::default());
        assert!(a.authorize(&alice, LOCAL, Operation::Read, ResourceType::Topic, "t"));
        let gone = a.delete(&[AclFilter::any()]).ok().unwrap();
        assert_eq!(gone, vec![vec![allow.clone()]]);
        assert!(!a.authorize(&alice, LOCAL, Operation::Read, ResourceType::Topic, "t"));
        // Another process (`ottla acls`) adds it back: seen after RELOAD_CHECK.
        AclStore::new(dir.path())
            .update(|acls| {
                acls.insert(allow);
                Ok(())
            })
            .unwrap();
        let until = Instant::now() + RELOAD_CHECK * 5;
        while !a.authorize(&alice, LOCAL, Operation::Read, ResourceType::Topic, "t") {
            assert!(Instant::now() < until, "the file's change was never seen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The cost of one check with 1000 bindings (a quarter prefixed):
    /// `cargo test -p ottla-broker --release authorize_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn authorize_cost_with_1000_acls() {
        let mut acls: Vec<AclBinding> = (0..1000)
            .map(|i| AclBinding {
                principal: format!("User:u{}", i % 50),
                ..bind(
                    ResourceType::Topic,
                    &format!("t{i}-"),
                    if i % 4 == 0 {
                        PatternType::Prefixed
                    } else {
                        PatternType::Literal
                    },
                    "User:x",
                    Operation::Write,
                    Permission::Allow,
                )
            })
            .collect();
        acls.push(bind(
            ResourceType::Topic,
            "orders",
            PatternType::Literal,
            "User:alice",
            Operation::Write,
            Permission::Allow,
        ));
        let (_d, a) = authz(&acls, AuthorizerConfig::default());
        let alice = Principal::user("alice");
        let n = 1_000_000;
        let t0 = Instant::now();
        for _ in 0..n {
            assert!(a.authorize(
                &alice,
                LOCAL,
                Operation::Write,
                ResourceType::Topic,
                "orders"
            ));
        }
        let per = t0.elapsed().as_nanos() / n;
        println!("authorize with {} ACLs: {per} ns per check", a.len());
    }

    #[test]
    fn none_configured_allows_everything() {
        let a = Authorizer::allow_all();
        assert!(a.authorize(
            &Principal::anonymous(),
            LOCAL,
            Operation::Alter,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
        assert_eq!(
            a.authorized_operations(&Principal::anonymous(), LOCAL, ResourceType::Topic, "x"),
            3576
        );
        assert!(matches!(
            a.describe(&AclFilter::any()),
            Err(AclError::Disabled)
        ));
    }
}
