//! Security helpers of `ottla._core` (issue 18): the SCRAM users of a data
//! directory (`ottla users`), its ACLs (`ottla acls`, `Admin.create_acls`),
//! and a throw-away CA with server and client certificates for tests
//! (`ottla.testing.make_certificates`).

use std::path::{Path, PathBuf};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use ottla_broker::auth::acl::{
    AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType,
};
use ottla_broker::auth::acl_store::AclStore;
use ottla_broker::auth::credentials::{
    CredentialStore, ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS,
};

fn mechanisms(names: Option<Vec<String>>) -> PyResult<Vec<ScramMechanism>> {
    match names {
        None => Ok(ScramMechanism::ALL.to_vec()),
        Some(names) => names
            .iter()
            .map(|n| {
                ScramMechanism::parse(n).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "unknown SCRAM mechanism {n:?}: SCRAM-SHA-256 or SCRAM-SHA-512"
                    ))
                })
            })
            .collect(),
    }
}

fn os_err(e: String) -> PyErr {
    PyOSError::new_err(e)
}

/// `[(user, mechanism, iterations), ...]` of the directory's SCRAM users.
#[pyfunction]
pub fn scram_users(py: Python<'_>, path: PathBuf) -> PyResult<Vec<(String, String, u32)>> {
    let users = py
        .detach(|| CredentialStore::new(&path).users())
        .map_err(os_err)?;
    Ok(users
        .iter()
        .flat_map(|(u, m)| {
            m.iter()
                .map(move |(mech, c)| (u.clone(), mech.name().to_string(), c.iterations))
        })
        .collect())
}

/// Add a user, or change their password, for each of `mechanisms`.
#[pyfunction]
#[pyo3(signature = (path, user, password, *, mechanisms=None, iterations=4096))]
pub fn set_scram_user(
    py: Python<'_>,
    path: PathBuf,
    user: String,
    password: String,
    mechanisms: Option<Vec<String>>,
    iterations: u32,
) -> PyResult<()> {
    let mechs = self::mechanisms(mechanisms)?;
    if user.is_empty() {
        return Err(PyValueError::new_err("the user name must not be empty"));
    }
    if password.is_empty() {
        return Err(PyValueError::new_err("the password must not be empty"));
    }
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(PyValueError::new_err(format!(
            "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {iterations}"
        )));
    }
    py.detach(|| {
        let creds = mechs
            .iter()
            .map(|m| ScramCredential::from_password(*m, &password, iterations).map(|c| (*m, c)))
            .collect::<Result<Vec<_>, String>>()?;
        CredentialStore::new(&path).update(|users| {
            let entry = users.entry(user.clone()).or_default();
            for (m, c) in creds {
                entry.insert(m, c);
            }
            Ok(())
        })
    })
    .map_err(os_err)
}

/// Remove a user's credentials for `mechanisms` (all by default); whether
/// the user had any of them.
#[pyfunction]
#[pyo3(signature = (path, user, *, mechanisms=None))]
pub fn delete_scram_user(
    py: Python<'_>,
    path: PathBuf,
    user: String,
    mechanisms: Option<Vec<String>>,
) -> PyResult<bool> {
    let mechs = self::mechanisms(mechanisms)?;
    py.detach(|| {
        CredentialStore::new(&path).update(|users| {
            let Some(mine) = users.get_mut(&user) else {
                return Ok(false);
            };
            let mut any = false;
            for m in &mechs {
                any |= mine.remove(m).is_some();
            }
            if mine.is_empty() {
                users.remove(&user);
            }
            Ok(any)
        })
    })
    .map_err(os_err)
}

fn write_private(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A throw-away CA, a server certificate for `hosts` and a client
/// certificate (subject `CN=<name>`) per name of `clients`, written as PEM
/// files into `dir`; returns `{"ca": ..., "server_cert": ..., "server_key":
/// ..., "client:<name>:cert": ..., "client:<name>:key": ...}` paths.
#[pyfunction]
#[pyo3(signature = (dir, *, hosts=None, clients=None))]
pub fn make_certificates(
    py: Python<'_>,
    dir: PathBuf,
    hosts: Option<Vec<String>>,
    clients: Option<Vec<String>>,
) -> PyResult<Vec<(String, String)>> {
    let hosts = hosts.unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]);
    let clients = clients.unwrap_or_default();
    py.detach(|| make(&dir, hosts, &clients))
        .map_err(PyOSError::new_err)
}

fn make(
    dir: &Path,
    hosts: Vec<String>,
    clients: &[String],
) -> Result<Vec<(String, String)>, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let e = |e: rcgen::Error| format!("cannot make a certificate: {e}");
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let mut out = Vec::new();
    let mut put = |key: String, name: &str, text: &str, mode: u32| -> Result<(), String> {
        let p = dir.join(name);
        write_private(&p, text, mode)?;
        out.push((key, p.display().to_string()));
        Ok(())
    };
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ottla throw-away test CA");
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    put("ca".into(), "ca.pem", &ca.pem(), 0o644)?;
    put("ca_key".into(), "ca.key", &ca_key.serialize_pem(), 0o600)?;

    let server_key = KeyPair::generate().map_err(e)?;
    let mut sp = CertificateParams::new(hosts.clone()).map_err(e)?;
    sp.distinguished_name.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_else(|| "localhost".into()),
    );
    // Client authentication too: a broker presents its own certificate to
    // the others (mTLS between cluster nodes), as Kafka brokers use their
    // keystore for both.
    sp.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let server = sp.signed_by(&server_key, &ca, &ca_key).map_err(e)?;
    put("server_cert".into(), "server.pem", &server.pem(), 0o644)?;
    put(
        "server_key".into(),
        "server.key",
        &server_key.serialize_pem(),
        0o600,
    )?;

    for name in clients {
        let key = KeyPair::generate().map_err(e)?;
        let mut cp = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        cp.distinguished_name
            .push(DnType::CommonName, name.as_str());
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        cp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = cp.signed_by(&key, &ca, &ca_key).map_err(e)?;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        put(
            format!("client:{name}:cert"),
            &format!("client-{safe}.pem"),
            &cert.pem(),
            0o644,
        )?;
        put(
            format!("client:{name}:key"),
            &format!("client-{safe}.key"),
            &key.serialize_pem(),
            0o600,
        )?;
    }
    Ok(out)
}

// --- ACLs (`ottla acls`, `Admin.create_acls` & co. over the directory). ---

/// One binding as Python sees it: (resource_type, name, pattern_type,
/// principal, host, operation, permission), Kafka's names.
type AclTuple = (String, String, String, String, String, String, String);

fn tuple(b: &AclBinding) -> AclTuple {
    (
        b.resource_type.name().to_string(),
        b.name.clone(),
        b.pattern.name().to_string(),
        b.principal.clone(),
        b.host.clone(),
        b.operation.name().to_string(),
        b.permission.name().to_string(),
    )
}

fn named<T>(what: &str, v: &str, parse: impl Fn(&str) -> Option<T>) -> PyResult<T> {
    parse(v).ok_or_else(|| PyValueError::new_err(format!("unknown {what} {v:?}")))
}

fn binding(t: AclTuple) -> PyResult<AclBinding> {
    let (rt, name, pattern, principal, host, op, perm) = t;
    let b = AclBinding {
        resource_type: named("resource type", &rt, ResourceType::parse)?,
        name,
        pattern: named("pattern type", &pattern, PatternType::parse)?,
        principal,
        host,
        operation: named("operation", &op, Operation::parse)?,
        permission: named("permission type", &perm, Permission::parse)?,
    };
    b.validate().map_err(PyValueError::new_err)?;
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: &str,
    name: Option<String>,
    pattern_type: &str,
    principal: Option<String>,
    host: Option<String>,
    operation: &str,
    permission: &str,
) -> PyResult<AclFilter> {
    let f = AclFilter {
        resource_type: named("resource type", resource_type, ResourceType::parse)?,
        name,
        pattern: named("pattern type", pattern_type, PatternType::parse)?,
        principal,
        host,
        operation: named("operation", operation, Operation::parse)?,
        permission: named("permission type", permission, Permission::parse)?,
    };
    f.validate().map_err(PyValueError::new_err)?;
    Ok(f)
}

/// The directory's ACL bindings that the filter selects (all by default).
#[pyfunction]
#[pyo3(signature = (path, *, resource_type="ANY", name=None, pattern_type="ANY",
                    principal=None, host=None, operation="ANY", permission="ANY"))]
#[allow(clippy::too_many_arguments)]
pub fn acls(
    py: Python<'_>,
    path: PathBuf,
    resource_type: &str,
    name: Option<String>,
    pattern_type: &str,
    principal: Option<String>,
    host: Option<String>,
    operation: &str,
    permission: &str,
) -> PyResult<Vec<AclTuple>> {
    let f = filter(
        resource_type,
        name,
        pattern_type,
        principal,
        host,
        operation,
        permission,
    )?;
    let (_, all) = py.detach(|| AclStore::new(&path).load()).map_err(os_err)?;
    Ok(all.iter().filter(|b| f.matches(b)).map(tuple).collect())
}

/// Add ACL bindings to the directory (a running broker sees them within a
/// second); each is checked first, and none is added if one is invalid.
#[pyfunction]
pub fn create_acls(py: Python<'_>, path: PathBuf, bindings: Vec<AclTuple>) -> PyResult<()> {
    let parsed = bindings
        .into_iter()
        .map(binding)
        .collect::<PyResult<Vec<_>>>()?;
    py.detach(|| {
        AclStore::new(&path).update(|acls| {
            acls.extend(parsed);
            Ok(())
        })
    })
    .map_err(os_err)
}

/// Remove the directory's ACL bindings the filter selects; returns them.
#[pyfunction]
#[pyo3(signature = (path, *, resource_type="ANY", name=None, pattern_type="ANY",
                    principal=None, host=None, operation="ANY", permission="ANY"))]
#[allow(clippy::too_many_arguments)]
pub fn delete_acls(
    py: Python<'_>,
    path: PathBuf,
    resource_type: &str,
    name: Option<String>,
    pattern_type: &str,
    principal: Option<String>,
    host: Option<String>,
    operation: &str,
    permission: &str,
) -> PyResult<Vec<AclTuple>> {
    let f = filter(
        resource_type,
        name,
        pattern_type,
        principal,
        host,
        operation,
        permission,
    )?;
    let gone = py
        .detach(|| {
            AclStore::new(&path).update(|acls| {
                Ok(ottla_broker::auth::authorizer::delete_matching(
                    acls,
                    std::slice::from_ref(&f),
                ))
            })
        })
        .map_err(os_err)?;
    Ok(gone.iter().flatten().map(tuple).collect())
}
