//! DescribeAcls (29), CreateAcls (30) and DeleteAcls (31), v1-3 as Kafka
//! 4.x serves them (KIP-896 removed v0).
//!
//! Without an authorizer each answers SECURITY_DISABLED ("No Authorizer is
//! configured."), as Kafka does. DescribeAcls needs DESCRIBE on the
//! cluster, CreateAcls and DeleteAcls ALTER (else
//! CLUSTER_AUTHORIZATION_FAILED). A binding that is not one Kafka stores
//! (resource type or pattern ANY/MATCH, operation or permission ANY, an
//! unparsable principal, an empty name, a cluster not named
//! `kafka-cluster`) fails alone with INVALID_REQUEST; the others are
//! stored, and take effect on the next request of every connection.
//!
//! On a cluster node the bindings are the cluster's: CreateAcls and
//! DeleteAcls go to the active controller, which stores them in the
//! metadata log (`auth::cluster`); every node's authorizer follows its
//! image, and DescribeAcls answers from this node's.

use std::sync::Arc;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};

use super::s;
use crate::auth::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use crate::auth::authorizer::AclError;
use crate::auth::cluster;
use crate::dispatch::Session;
use crate::errors::code;
use crate::Shared;

const DISABLED_MESSAGE: &str = "No Authorizer is configured.";

fn failure(e: AclError) -> (i16, String) {
    match e {
        AclError::Disabled => (code::SECURITY_DISABLED, DISABLED_MESSAGE.into()),
        AclError::Io(e) => {
            // KAFKA_STORAGE_ERROR, as for any disk the broker cannot write
            // (the file store keeps its last good state).
            crate::errors::warn(&format!("ACLs: {e}"));
            (code::KAFKA_STORAGE_ERROR, e)
        }
    }
}

/// The refusal that comes before anything else: no authorizer, or the
/// principal may not do `op` on the cluster.
fn refused(shared: &Shared, session: &Session, op: Operation) -> Option<(i16, String)> {
    if !shared.authorizer.enabled() {
        return Some((code::SECURITY_DISABLED, DISABLED_MESSAGE.into()));
    }
    if !session.authorized_cluster(shared, op) {
        return Some((
            code::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.".into(),
        ));
    }
    None
}

/// A cluster node whose ACLs are the metadata log's.
fn cluster_node(shared: &Shared) -> Option<&Arc<crate::cluster::ClusterNode>> {
    shared
        .cluster
        .as_ref()
        .filter(|_| shared.authorizer.in_cluster())
}

/// Stores the bindings: in the data directory, or on a cluster node in the
/// metadata log through the active controller (this broker's authorizer
/// has them when this returns).
async fn store(shared: &Shared, valid: &[AclBinding]) -> Result<(), (i16, String)> {
    let Some(node) = cluster_node(shared) else {
        return super::blocking(|| shared.authorizer.create(valid)).map_err(failure);
    };
    let entries = valid.iter().map(cluster::entry_of).collect();
    node.create_acls(entries).await?;
    cluster::sync(shared, &node.image());
    Ok(())
}

/// Removes what the filters select; per filter, the bindings removed.
async fn remove(
    shared: &Shared,
    valid: &[AclFilter],
) -> Result<Vec<Vec<AclBinding>>, (i16, String)> {
    let Some(node) = cluster_node(shared) else {
        return super::blocking(|| shared.authorizer.delete(valid)).map_err(failure);
    };
    let matched = node.delete_acls(valid.to_vec()).await?;
    cluster::sync(shared, &node.image());
    Ok(matched
        .iter()
        .map(|m| m.iter().filter_map(cluster::binding_of).collect())
        .collect())
}

fn binding(c: &AclCreation) -> Result<AclBinding, String> {
    let bad = |what: &str, v: i8| format!("Invalid {what} {v}");
    let b = AclBinding {
        resource_type: ResourceType::from_code(c.resource_type)
            .ok_or_else(|| bad("resource type", c.resource_type))?,
        name: c.resource_name.as_str().to_string(),
        pattern: PatternType::from_code(c.resource_pattern_type)
            .ok_or_else(|| bad("pattern type", c.resource_pattern_type))?,
        principal: c.principal.as_str().to_string(),
        host: c.host.as_str().to_string(),
        operation: Operation::from_code(c.operation)
            .ok_or_else(|| bad("operation", c.operation))?,
        permission: Permission::from_code(c.permission_type)
            .ok_or_else(|| bad("permission type", c.permission_type))?,
    };
    b.validate()?;
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
fn filter(
    rt: i8,
    name: Option<&str>,
    pattern: i8,
    principal: Option<&str>,
    host: Option<&str>,
    op: i8,
    perm: i8,
) -> Result<AclFilter, String> {
    let bad = |what: &str, v: i8| format!("Invalid {what} filter {v}");
    let f = AclFilter {
        resource_type: ResourceType::from_code(rt).ok_or_else(|| bad("resource type", rt))?,
        name: name.map(str::to_string),
        pattern: PatternType::from_code(pattern).ok_or_else(|| bad("pattern type", pattern))?,
        principal: principal.map(str::to_string),
        host: host.map(str::to_string),
        operation: Operation::from_code(op).ok_or_else(|| bad("operation", op))?,
        permission: Permission::from_code(perm).ok_or_else(|| bad("permission type", perm))?,
    };
    f.validate()?;
    Ok(f)
}

pub async fn create(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: CreateAclsRequest,
    _v: i16,
) -> CreateAclsResponse {
    let mut r = CreateAclsResponse::default();
    let refusal = refused(shared, session, Operation::Alter);
    let parsed: Vec<Result<AclBinding, String>> = req.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .cloned()
        .collect();
    let stored = match refusal {
        Some(e) => Err(e),
        None if valid.is_empty() => Ok(()),
        None => store(shared, &valid).await,
    };
    r.results = parsed
        .into_iter()
        .map(|p| {
            let mut res = AclCreationResult::default();
            match (&stored, p) {
                (Err((c, m)), _) => {
                    res.error_code = *c;
                    res.error_message = Some(s(m));
                }
                (Ok(()), Err(m)) => {
                    res.error_code = code::INVALID_REQUEST;
                    res.error_message = Some(s(&m));
                }
                (Ok(()), Ok(_)) => {}
            }
            res
        })
        .collect();
    r
}

pub async fn describe(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: DescribeAclsRequest,
    _v: i16,
) -> DescribeAclsResponse {
    let mut r = DescribeAclsResponse::default();
    let fail = |r: &mut DescribeAclsResponse, (c, m): (i16, String)| {
        r.error_code = c;
        r.error_message = Some(s(&m));
    };
    if let Some(e) = refused(shared, session, Operation::Describe) {
        fail(&mut r, e);
        return r;
    }
    let f = match filter(
        req.resource_type_filter,
        req.resource_name_filter.as_deref(),
        req.pattern_type_filter,
        req.principal_filter.as_deref(),
        req.host_filter.as_deref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(m) => {
            fail(&mut r, (code::INVALID_REQUEST, m));
            return r;
        }
    };
    let found = match super::blocking(|| shared.authorizer.describe(&f)) {
        Ok(found) => found,
        Err(e) => {
            fail(&mut r, failure(e));
            return r;
        }
    };
    // Grouped by resource pattern, as Kafka answers (the bindings come sorted).
    for b in found {
        let same = r
            .resources
            .last()
            .is_some_and(|last: &DescribeAclsResource| {
                last.resource_type == b.resource_type.code()
                    && last.pattern_type == b.pattern.code()
                    && last.resource_name.as_str() == b.name
            });
        if !same {
            let mut res = DescribeAclsResource::default();
            res.resource_type = b.resource_type.code();
            res.resource_name = s(&b.name);
            res.pattern_type = b.pattern.code();
            r.resources.push(res);
        }
        let mut d = AclDescription::default();
        d.principal = s(&b.principal);
        d.host = s(&b.host);
        d.operation = b.operation.code();
        d.permission_type = b.permission.code();
        if let Some(last) = r.resources.last_mut() {
            last.acls.push(d);
        }
    }
    r
}

pub async fn delete(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: DeleteAclsRequest,
    _v: i16,
) -> DeleteAclsResponse {
    let mut r = DeleteAclsResponse::default();
    let refusal = refused(shared, session, Operation::Alter);
    let parsed: Vec<Result<AclFilter, String>> = req
        .filters
        .iter()
        .map(|f: &DeleteAclsFilter| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclFilter> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .cloned()
        .collect();
    let deleted = match refusal {
        Some(e) => Err(e),
        None if valid.is_empty() => Ok(Vec::new()),
        None => remove(shared, &valid).await,
    };
    let mut gone = match &deleted {
        Ok(g) => g.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    r.filter_results = parsed
        .into_iter()
        .map(|p| {
            let mut fr = DeleteAclsFilterResult::default();
            match (&deleted, p) {
                (Err((c, m)), _) => {
                    fr.error_code = *c;
                    fr.error_message = Some(s(m));
                }
                (Ok(_), Err(m)) => {
                    fr.error_code = code::INVALID_REQUEST;
                    fr.error_message = Some(s(&m));
                }
                (Ok(_), Ok(_)) => {
                    fr.matching_acls = gone
                        .next()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|b| {
                            let mut m = DeleteAclsMatchingAcl::default();
                            m.resource_type = b.resource_type.code();
                            m.resource_name = s(&b.name);
                            m.pattern_type = b.pattern.code();
                            m.principal = s(&b.principal);
                            m.host = s(&b.host);
                            m.operation = b.operation.code();
                            m.permission_type = b.permission.code();
                            m
                        })
                        .collect();
                }
            }
            fr
        })
        .collect();
    r
}
