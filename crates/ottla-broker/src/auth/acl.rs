//! Kafka's ACL model: bindings (a resource pattern and an access control
//! entry) and the filters DescribeAcls and DeleteAcls match them with.
//!
//! The codes are Kafka's on the wire (`AclOperation`, `ResourceType`,
//! `PatternType`, `AclPermissionType`); the names are Kafka's too, as
//! `kafka-acls.sh` prints them. Matching a request against bindings is the
//! authorizer's (`auth::authorizer`); this module only says what a binding
//! is, whether a filter selects it, and whether one is valid to create.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Kafka's `ResourceType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    Any,
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    pub const CONCRETE: [ResourceType; 6] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
        ResourceType::DelegationToken,
        ResourceType::User,
    ];

    pub fn code(self) -> i8 {
        match self {
            ResourceType::Any => 1,
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }

    pub fn from_code(c: i8) -> Option<ResourceType> {
        [ResourceType::Any]
            .into_iter()
            .chain(ResourceType::CONCRETE)
            .find(|r| r.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Any => "ANY",
            ResourceType::Topic => "TOPIC",
            ResourceType::Group => "GROUP",
            ResourceType::Cluster => "CLUSTER",
            ResourceType::TransactionalId => "TRANSACTIONAL_ID",
            ResourceType::DelegationToken => "DELEGATION_TOKEN",
            ResourceType::User => "USER",
        }
    }

    pub fn parse(name: &str) -> Option<ResourceType> {
        let n = name.to_ascii_uppercase().replace('-', "_");
        [ResourceType::Any]
            .into_iter()
            .chain(ResourceType::CONCRETE)
            .find(|r| r.name() == n)
    }

    /// The operations Kafka defines on this resource type (what authorized
    /// operations bitfields range over).
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
            ResourceType::Any => &[],
        }
    }
}

/// The only name a CLUSTER resource has (Kafka's `kafka-cluster`).
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The wildcard resource name and principal name (`*`).
pub const WILDCARD: &str = "*";

/// Kafka's `PatternType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    /// Filters only: any pattern type, names compared exactly.
    Any,
    /// Filters only: every binding that applies to the named resource
    /// (literal, wildcard, and prefixes of the name).
    Match,
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn code(self) -> i8 {
        match self {
            PatternType::Any => 1,
            PatternType::Match => 2,
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn from_code(c: i8) -> Option<PatternType> {
        [
            PatternType::Any,
            PatternType::Match,
            PatternType::Literal,
            PatternType::Prefixed,
        ]
        .into_iter()
        .find(|p| p.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            PatternType::Any => "ANY",
            PatternType::Match => "MATCH",
            PatternType::Literal => "LITERAL",
            PatternType::Prefixed => "PREFIXED",
        }
    }

    pub fn parse(name: &str) -> Option<PatternType> {
        let n = name.to_ascii_uppercase();
        [
            PatternType::Any,
            PatternType::Match,
            PatternType::Literal,
            PatternType::Prefixed,
        ]
        .into_iter()
        .find(|p| p.name() == n)
    }
}

/// Kafka's `AclOperation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// Filters only.
    Any,
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl Operation {
    const EVERY: [Operation; 14] = [
        Operation::Any,
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
        Operation::CreateTokens,
        Operation::DescribeTokens,
    ];

    pub fn code(self) -> i8 {
        match self {
            Operation::Any => 1,
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
            Operation::CreateTokens => 13,
            Operation::DescribeTokens => 14,
        }
    }

    pub fn from_code(c: i8) -> Option<Operation> {
        Operation::EVERY.into_iter().find(|o| o.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::Any => "ANY",
            Operation::All => "ALL",
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Create => "CREATE",
            Operation::Delete => "DELETE",
            Operation::Alter => "ALTER",
            Operation::Describe => "DESCRIBE",
            Operation::ClusterAction => "CLUSTER_ACTION",
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
            Operation::AlterConfigs => "ALTER_CONFIGS",
            Operation::IdempotentWrite => "IDEMPOTENT_WRITE",
            Operation::CreateTokens => "CREATE_TOKENS",
            Operation::DescribeTokens => "DESCRIBE_TOKENS",
        }
    }

    pub fn parse(name: &str) -> Option<Operation> {
        let n = name.to_ascii_uppercase().replace('-', "_");
        Operation::EVERY.into_iter().find(|o| o.name() == n)
    }

    /// Whether an ALLOW binding for `self` allows `asked`: the same
    /// operation, ALL, or one that implies it (Kafka: READ, WRITE, DELETE
    /// and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS).
    pub fn allows(self, asked: Operation) -> bool {
        self == asked
            || self == Operation::All
            || (asked == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (asked == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }

    /// Whether a DENY binding for `self` denies `asked`: the same
    /// operation or ALL (a denied READ does not deny DESCRIBE).
    pub fn denies(self, asked: Operation) -> bool {
        self == asked || self == Operation::All
    }
}

/// Kafka's `AclPermissionType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// Filters only.
    Any,
    Deny,
    Allow,
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Permission::Any => 1,
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_code(c: i8) -> Option<Permission> {
        [Permission::Any, Permission::Deny, Permission::Allow]
            .into_iter()
            .find(|p| p.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::Any => "ANY",
            Permission::Deny => "DENY",
            Permission::Allow => "ALLOW",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        let n = name.to_ascii_uppercase();
        [Permission::Any, Permission::Deny, Permission::Allow]
            .into_iter()
            .find(|p| p.name() == n)
    }
}

/// One ACL: who (`principal`, `User:alice` or `User:*`) may or may not
/// (`permission`) do what (`operation`) from where (`host`, an IP address
/// or `*`) on which resources (`resource_type`, `pattern`, `name`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Kafka's checks on a binding to create (CreateAcls answers a failed
    /// one with INVALID_REQUEST and this message).
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.resource_type, ResourceType::Any) {
            return Err("Invalid resource type ANY".into());
        }
        if !matches!(self.pattern, PatternType::Literal | PatternType::Prefixed) {
            return Err(format!(
                "Invalid pattern type {} (only LITERAL and PREFIXED may be stored)",
                self.pattern.name()
            ));
        }
        if matches!(self.operation, Operation::Any) {
            return Err("Invalid operation ANY".into());
        }
        if matches!(self.permission, Permission::Any) {
            return Err("Invalid permission type ANY".into());
        }
        if self.name.is_empty() {
            return Err("Invalid empty resource name".into());
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        parse_principal(&self.principal)?;
        Ok(())
    }

    /// The ACL's host, parsed (`None`: `*`, every host).
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// `User:alice` as (`User`, `alice`); Kafka's principal strings need the
/// type before the first colon.
pub fn parse_principal(p: &str) -> Result<(&str, &str), String> {
    match p.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok((kind, name)),
        _ => Err(format!(
            "Could not parse principal from `{p}` (no colon is found between principal type and principal name)"
        )),
    }
}

/// What DescribeAcls and DeleteAcls select bindings with: `None` fields
/// and the `Any` codes match everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub name: Option<String>,
    pub pattern: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// Everything.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: ResourceType::Any,
            name: None,
            pattern: PatternType::Any,
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        }
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != b.resource_type {
            return false;
        }
        if !self.pattern_matches(b) {
            return false;
        }
        if let Some(p) = &self.principal {
            if p != &b.principal {
                return false;
            }
        }
        if let Some(h) = &self.host {
            let same = match (h.parse::<IpAddr>(), b.host_ip()) {
                (Ok(a), Some(c)) => a == c,
                _ => h == &b.host,
            };
            if !same {
                return false;
            }
        }
        (self.operation == Operation::Any || self.operation == b.operation)
            && (self.permission == Permission::Any || self.permission == b.permission)
    }

    fn pattern_matches(&self, b: &AclBinding) -> bool {
        match self.pattern {
            PatternType::Any => self.name.as_ref().map_or(true, |n| n == &b.name),
            PatternType::Literal | PatternType::Prefixed => {
                self.pattern == b.pattern && self.name.as_ref().map_or(true, |n| n == &b.name)
            }
            PatternType::Match => match &self.name {
                None => true,
                Some(n) => match b.pattern {
                    PatternType::Literal => &b.name == n || b.name == WILDCARD,
                    PatternType::Prefixed => n.starts_with(b.name.as_str()),
                    _ => false,
                },
            },
        }
    }

    /// Kafka's checks on a filter (DeleteAcls and DescribeAcls answer a bad
    /// one with INVALID_REQUEST).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = &self.principal {
            parse_principal(p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str, pattern: PatternType) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn codes_are_kafkas() {
        assert_eq!(Operation::DescribeTokens.code(), 14);
        assert_eq!(Operation::from_code(12), Some(Operation::IdempotentWrite));
        assert_eq!(ResourceType::User.code(), 7);
        assert_eq!(PatternType::Prefixed.code(), 4);
        assert_eq!(Permission::Allow.code(), 3);
        assert_eq!(Operation::from_code(0), None);
        assert_eq!(
            Operation::parse("describe-configs"),
            Some(Operation::DescribeConfigs)
        );
    }

    #[test]
    fn implied_operations() {
        assert!(Operation::Read.allows(Operation::Describe));
        assert!(Operation::AlterConfigs.allows(Operation::DescribeConfigs));
        assert!(!Operation::Describe.allows(Operation::Read));
        assert!(Operation::All.allows(Operation::Write));
        assert!(!Operation::Read.denies(Operation::Describe));
        assert!(Operation::All.denies(Operation::Describe));
    }

    #[test]
    fn filters() {
        let lit = b("orders", PatternType::Literal);
        let pre = b("ord", PatternType::Prefixed);
        let star = b("*", PatternType::Literal);
        let mut f = AclFilter::any();
        assert!(f.matches(&lit) && f.matches(&pre) && f.matches(&star));
        f.pattern = PatternType::Match;
        f.name = Some("orders".into());
        assert!(f.matches(&lit) && f.matches(&pre) && f.matches(&star));
        f.name = Some("other".into());
        assert!(!f.matches(&lit) && !f.matches(&pre) && f.matches(&star));
        f.pattern = PatternType::Any;
        f.name = Some("ord".into());
        assert!(!f.matches(&lit) && f.matches(&pre));
        f.pattern = PatternType::Literal;
        assert!(!f.matches(&pre));
    }

    #[test]
    fn validation() {
        assert!(b("orders", PatternType::Literal).validate().is_ok());
        let mut bad = b("orders", PatternType::Match);
        assert!(bad.validate().is_err());
        bad = b("orders", PatternType::Literal);
        bad.principal = "alice".into();
        assert!(bad.validate().is_err());
        bad = b("orders", PatternType::Literal);
        bad.resource_type = ResourceType::Cluster;
        bad.name = "x".into();
        assert!(bad.validate().is_err());
    }
}
