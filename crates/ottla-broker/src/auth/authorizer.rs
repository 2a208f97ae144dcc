//! Where ACL checks will live (issue 18, the step after authentication).
//!
//! Kafka's request handlers ask the authorizer per resource ("may
//! `User:alice` WRITE topic `orders`?") and answer a refusal with the
//! resource's `*_AUTHORIZATION_FAILED` code, not a closed connection. The
//! principal is on every connection's `dispatch::Session` already; an
//! `Authorizer` held by `Shared` and asked from the `api::*` handlers is
//! the shape the ACL step fills in (`StandardAuthorizer`'s ACL bindings,
//! Create/Describe/DeleteAcls). Until then every principal may do
//! everything, as with Kafka's `authorizer.class.name` unset.

use super::principal::Principal;

/// Kafka's `AclOperation`s that handlers will ask about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
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
}

/// Kafka's resource types that handlers will name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

/// The authorizer's question: may `principal` do `op` on the resource?
pub trait Authorizer: Send + Sync {
    fn authorize(
        &self,
        principal: &Principal,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool;
}

/// No authorizer configured: everything is allowed (Kafka without
/// `authorizer.class.name`).
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &Principal, _: Operation, _: ResourceType, _: &str) -> bool {
        true
    }
}
