//! Who a connection is (issue 18): listeners' security protocols, TLS,
//! SASL, stored SCRAM credentials, and the principal every request of an
//! authenticated connection carries.
//!
//! ```text
//! principal    `User:alice`, `User:ANONYMOUS`: what the authorizer will see
//! tls          rustls server settings from PEM files; mTLS principals from the
//!              client certificate's subject (ssl.client.auth)
//! sasl/        the SASL servers: PLAIN, SCRAM-SHA-256/512, OAUTHBEARER
//!              (unsecured JWTs), one exchange per connection at a time
//! credentials  SCRAM credentials, salted and hashed, in the data directory
//! acl          Kafka's ACL model: bindings, filters, codes and names
//! acl_store    the ACL bindings, durable in the data directory
//! authorizer   Kafka's StandardAuthorizer over them (`--authorizer standard`):
//!              super users, DENY before ALLOW, implied operations,
//!              `allow.everyone.if.no.acl.found`; authorized operations
//! peer         brokers as clients of each other: the inter-broker listener's
//!              TLS and SASL (a SCRAM client), the controller listener's mTLS
//! cluster      a cluster node's ACLs and users: in the metadata log, decided
//!              on the active controller, followed from the image
//! ```
//!
//! Handlers ask `Session::authorized` per resource, where Kafka's request
//! handlers ask, and answer a refusal with the resource's
//! `*_AUTHORIZATION_FAILED` code.
//!
//! The transport (`net::connection`) wraps accepted sockets in TLS and keeps
//! every request but ApiVersions, SaslHandshake and SaslAuthenticate away
//! from `dispatch` until a SASL listener's client has authenticated
//! (`net::gate`); `api::sasl` runs the exchanges. Nothing here knows the
//! storage engine beyond the data directory's path.

pub mod acl;
pub mod acl_store;
pub mod authorizer;
pub mod cluster;
pub mod credentials;
pub mod peer;
pub mod principal;
pub mod private_file;
pub mod sasl;
pub mod tls;

use std::fmt;

use acl::{Operation, ResourceType};

impl crate::dispatch::Session {
    /// May this connection's principal, from its address, do `op` on the
    /// resource? Always true without an authorizer.
    pub fn authorized(
        &self,
        shared: &crate::Shared,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        shared
            .authorizer
            .authorize(&self.principal, self.peer.ip(), op, resource, name)
    }

    /// May it do `op` on some resource of the type (`authorize_any`)?
    pub fn authorized_any(
        &self,
        shared: &crate::Shared,
        op: Operation,
        resource: ResourceType,
    ) -> bool {
        shared
            .authorizer
            .authorize_any(&self.principal, self.peer.ip(), op, resource)
    }

    /// May it do `op` on the cluster (`kafka-cluster`)?
    pub fn authorized_cluster(&self, shared: &crate::Shared, op: Operation) -> bool {
        self.authorized(shared, op, ResourceType::Cluster, acl::CLUSTER_NAME)
    }

    /// Kafka's authorized-operations bitfield of a resource for this
    /// connection (every operation of the type without an authorizer).
    pub fn authorized_operations(
        &self,
        shared: &crate::Shared,
        resource: ResourceType,
        name: &str,
    ) -> i32 {
        shared
            .authorizer
            .authorized_operations(&self.principal, self.peer.ip(), resource, name)
    }
}

/// Kafka's `security.protocol` of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
