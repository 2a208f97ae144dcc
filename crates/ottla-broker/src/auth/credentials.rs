//! SCRAM credentials (RFC 5802), salted and hashed, in the data directory.
//!
//! Kafka keeps `(salt, StoredKey, ServerKey, iterations)` per user and
//! mechanism, never the password: the password cannot be read back from
//! them, and a stolen file lets nobody authenticate without a dictionary
//! attack on each entry (PBKDF2, 4096+ iterations). Same here, in
//! `<data>/.ottla/scram-credentials`, written whole by rename with mode 0600
//! under an exclusive lock (`scram-credentials.lock`), so `ottla users` on
//! the directory and AlterUserScramCredentials on a running broker do not
//! lose each other's changes. Readers take no lock: a rename is atomic, and
//! the broker re-reads the file when its inode, size or mtime change, so a
//! user added by `ottla users` can log in at once.
//!
//! The file is text, one credential a line after a version line:
//! `MECHANISM ITERATIONS SALT STORED_KEY SERVER_KEY USER` (all but the
//! mechanism and iterations in base64, the user name too, so any name is
//! one token). PLAIN checks a password against the same credentials (it
//! derives the salted password with the stored salt and iterations), so one
//! set of users serves every mechanism.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256, Sha512};

use super::private_file;

/// Kafka's bounds on SCRAM iterations (`ScramMechanism.minIterations`, and
/// the controller's upper bound).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;
/// The iterations `ottla users` uses unless told otherwise (Kafka's
/// `kafka-configs` default).
pub const DEFAULT_ITERATIONS: u32 = 4096;

const FILE: &str = "scram-credentials";
const LOCK: &str = "scram-credentials.lock";
const HEADER: &str = "ottla-scram-credentials 1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The wire's `ScramMechanism` byte (DescribeUserScramCredentials,
    /// AlterUserScramCredentials): 1 and 2; 0 is UNKNOWN.
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|m| m.kafka_type() == t)
    }

    pub fn hmac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                // HMAC takes keys of any length: new_from_slice cannot fail.
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub fn hash(self, msg: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(msg).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }

    /// RFC 5802's `Hi()`: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }

    /// The length of this mechanism's hash, in bytes.
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

/// What the server keeps of a password (RFC 5802 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl ScramCredential {
    /// From the salted password, as AlterUserScramCredentials sends it.
    pub fn from_salted(
        mech: ScramMechanism,
        salted: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let client_key = mech.hmac(salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: mech.hash(&client_key),
            server_key: mech.hmac(salted, b"Server Key"),
            iterations,
        }
    }

    /// From a password, with a fresh random salt.
    pub fn from_password(
        mech: ScramMechanism,
        password: &str,
        iterations: u32,
    ) -> Result<ScramCredential, String> {
        let salt = random_bytes(32)?;
        let salted = mech.salted_password(password.as_bytes(), &salt, iterations);
        Ok(ScramCredential::from_salted(
            mech, &salted, &salt, iterations,
        ))
    }

    /// Whether `password` is the one these keys were made from (PLAIN).
    pub fn matches_password(&self, mech: ScramMechanism, password: &[u8]) -> bool {
        let salted = mech.salted_password(password, &self.salt, self.iterations);
        let candidate = ScramCredential::from_salted(mech, &salted, &self.salt, self.iterations);
        constant_time_eq(&candidate.stored_key, &self.stored_key)
    }
}

pub fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v).map_err(|e| format!("no random bytes from the OS: {e}"))?;
    Ok(v)
}

/// Equality whose time does not depend on where the inputs first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every credential: user, then mechanism.
pub type Users = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

/// What identifies one version of the file (see the module comment).
type Stamp = (u64, u64, i64, i64);

/// The credentials of one data directory, or of the cluster.
pub struct CredentialStore {
    dir: PathBuf,
    cache: Mutex<Option<(Stamp, Arc<Users>)>>,
    /// On a cluster node: the users of the metadata image (`auth::cluster`
    /// keeps them current), the only ones; `None` on a broker alone.
    cluster: Mutex<Option<Arc<Users>>>,
}

impl CredentialStore {
    /// Credentials under `data_dir/.ottla/`.
    pub fn new(data_dir: &Path) -> CredentialStore {
        CredentialStore {
            dir: data_dir.join(".ottla"),
            cache: Mutex::new(None),
            cluster: Mutex::new(None),
        }
    }

    /// A cluster node's credentials: those of the metadata log, none until
    /// its image is followed ([`CredentialStore::set_cluster_users`]); the
    /// directory's file is not read.
    pub fn for_cluster(data_dir: &Path) -> CredentialStore {
        let store = CredentialStore::new(data_dir);
        *store.cluster.lock() = Some(Arc::new(Users::new()));
        store
    }

    /// Whether the users are the cluster's (the metadata log's).
    pub fn in_cluster(&self) -> bool {
        self.cluster.lock().is_some()
    }

    /// The cluster's users, as the metadata image now holds them.
    pub fn set_cluster_users(&self, users: Users) {
        *self.cluster.lock() = Some(Arc::new(users));
    }

    fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Every user's credentials, as the file (or, on a cluster node, the
    /// metadata image) holds them now.
    pub fn users(&self) -> Result<Arc<Users>, String> {
        if let Some(users) = self.cluster.lock().as_ref() {
            return Ok(users.clone());
        }
        let path = self.file();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(Users::new()))
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let stamp = (meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
        if let Some((s, users)) = self.cache.lock().as_ref() {
            if *s == stamp {
                return Ok(users.clone());
            }
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(Users::new()))
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let users = Arc::new(parse(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        *self.cache.lock() = Some((stamp, users.clone()));
        Ok(users)
    }

    /// One credential, if the user has one for `mech`.
    pub fn get(&self, user: &str, mech: ScramMechanism) -> Result<Option<ScramCredential>, String> {
        Ok(self.users()?.get(user).and_then(|m| m.get(&mech)).cloned())
    }

    /// Change the file under its lock: `f` edits the users as the file holds
    /// them, and its result is written back whole (nothing if it fails).
    pub fn update<T>(&self, f: impl FnOnce(&mut Users) -> Result<T, String>) -> Result<T, String> {
        if self.in_cluster() {
            return Err("a cluster node's SCRAM users live in the cluster's metadata log".into());
        }
        private_file::refuse_cluster_node(&self.dir, "SCRAM users", "ottla users")?;
        private_file::locked(&self.dir, LOCK, || {
            let path = self.file();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            let mut users = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let out = f(&mut users)?;
            private_file::replace(&self.dir, FILE, &render(&users))?;
            Ok(out)
        })
    }
}

fn parse(text: &str) -> Result<Users, String> {
    let mut users = Users::new();
    let mut lines = text.lines().enumerate();
    match lines.next() {
        None => return Ok(users),
        Some((_, HEADER)) => {}
        Some((_, other)) => return Err(format!("not a credentials file (first line {other:?})")),
    }
    for (n, line) in lines {
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}", n + 1);
        let f: Vec<&str> = line.split(' ').collect();
        let [mech, iterations, salt, stored, server, user] = f[..] else {
            return Err(bad("expected 6 fields"));
        };
        let mech = ScramMechanism::parse(mech).ok_or_else(|| bad("unknown mechanism"))?;
        let iterations: u32 = iterations.parse().map_err(|_| bad("bad iterations"))?;
        let b = |s: &str| B64.decode(s).map_err(|_| bad("bad base64"));
        let user = String::from_utf8(b(user)?).map_err(|_| bad("user name not UTF-8"))?;
        let cred = ScramCredential {
            salt: b(salt)?,
            stored_key: b(stored)?,
            server_key: b(server)?,
            iterations,
        };
        if cred.stored_key.len() != mech.hash_len() || cred.server_key.len() != mech.hash_len() {
            return Err(bad("key of the wrong length"));
        }
        users.entry(user).or_default().insert(mech, cred);
    }
    Ok(users)
}

fn render(users: &Users) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for (user, mechs) in users {
        for (mech, c) in mechs {
            out.push_str(&format!(
                "{} {} {} {} {} {}\n",
                mech.name(),
                c.iterations,
                B64.encode(&c.salt),
                B64.encode(&c.stored_key),
                B64.encode(&c.server_key),
                B64.encode(user.as_bytes()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example: user "user", password "pencil".
    #[test]
    fn rfc7677_keys() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("b64");
        let m = ScramMechanism::Sha256;
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let c = ScramCredential::from_salted(m, &salted, &salt, 4096);
        let client_key = m.hmac(&salted, b"Client Key");
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = m.hmac(&c.stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        assert_eq!(
            B64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_sig = m.hmac(&c.server_key, auth.as_bytes());
        assert_eq!(
            B64.encode(server_sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(c.matches_password(m, b"pencil"));
        assert!(!c.matches_password(m, b"pencil2"));
    }

    #[test]
    fn file_round_trip_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = CredentialStore::new(dir.path());
        assert!(store.users().expect("empty").is_empty());
        let c = ScramCredential::from_password(ScramMechanism::Sha512, "pw", 4096).expect("cred");
        store
            .update(|u| {
                u.entry("al ice\n=".into())
                    .or_default()
                    .insert(ScramMechanism::Sha512, c.clone());
                Ok(())
            })
            .expect("update");
        let got = store
            .get("al ice\n=", ScramMechanism::Sha512)
            .expect("read")
            .expect("present");
        assert_eq!(got, c);
        let mode = std::fs::metadata(dir.path().join(".ottla").join(FILE))
            .expect("meta")
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another writer (ottla users) is seen by the next read.
        CredentialStore::new(dir.path())
            .update(|u| {
                u.clear();
                Ok(())
            })
            .expect("clear");
        assert!(store
            .get("al ice\n=", ScramMechanism::Sha512)
            .expect("read")
            .is_none());
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        for text in [
            "something else\n",
            "ottla-scram-credentials 1\nSCRAM-SHA-256 4096 a\n",
            "ottla-scram-credentials 1\nMD5 4096 AA== AA== AA== AA==\n",
            "ottla-scram-credentials 1\nSCRAM-SHA-256 x AA== AA== AA== AA==\n",
            "ottla-scram-credentials 1\nSCRAM-SHA-256 4096 AA== AA== AA== AA==\n",
            "ottla-scram-credentials 1\nSCRAM-SHA-256 4096 !! AA== AA== AA==\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
