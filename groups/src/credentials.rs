//! Credentials a new deployment gets: a random cluster secret file (what `btree-server
//! --write-config`, `chirper-server --write-config` and programmatic deployments write, so a
//! cluster is authenticated by default; see [`crate::runtime::tcp`], "Peer authentication"),
//! and optionally a cluster certificate authority with one certificate per member for mutual
//! TLS (see [`crate::runtime::tcp`], "TLS").
//!
//! Files holding secrets (the cluster secret, private keys) are created with mode 0600.

use crate::config::{ClusterConfig, TlsFiles};
use crate::ids::{ClusterId, NodeId};
use rand::TryRng;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes of randomness in a generated cluster secret (written as 64 hex digits).
pub const SECRET_RANDOM_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("no randomness for the cluster secret: {0}")]
    Randomness(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("generating TLS certificates: {0}")]
    Certificate(String),
}

/// Writes `bytes` to `path` (replacing it), readable and writable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CredentialError> {
    let fail = |e: std::io::Error| CredentialError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let mut f = open.open(path).map_err(fail)?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode through `open`; tighten it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
    }
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)
}

/// Writes a fresh random cluster secret ([`SECRET_RANDOM_BYTES`] from the operating system,
/// as hex and a newline) to `path`, mode 0600.
pub fn write_secret_file(path: &Path) -> Result<(), CredentialError> {
    let mut bytes = [0u8; SECRET_RANDOM_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| CredentialError::Randomness(e.to_string()))?;
    let mut text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    write_private(path, text.as_bytes())
}

/// Where a deployment file's generated credentials go: beside it, named after it
/// (`d.toml` -> `d.secret`, `d.tls/`).
pub fn beside(config_path: &Path, extension: &str) -> PathBuf {
    config_path.with_extension(extension)
}

/// `cfg` with a fresh secret written to `path` and named as its `secret_file` (the path as
/// given: a relative one is resolved against each node's working directory).
pub fn with_new_secret(cfg: ClusterConfig, path: &Path) -> Result<ClusterConfig, CredentialError> {
    write_secret_file(path)?;
    Ok(cfg.with_secret_file(path.display().to_string()))
}

/// The DNS name that identifies node `node` of cluster `cluster_id` in its TLS certificate (a
/// subject alternative name): `node-<id>.cluster-<cluster id in hex>.chorus`. A dialer checks
/// the acceptor's certificate for it; an acceptor checks the dialer's for the node its `Hello`
/// claims.
pub fn member_name(cluster_id: ClusterId, node: NodeId) -> String {
    format!("node-{}.cluster-{:x}.chorus", node.0, cluster_id.0)
}

/// Writes a fresh cluster CA (`ca.crt`) and, for every node of `cfg` (clients included), a
/// certificate naming it ([`member_name`], for server and client authentication) and its key
/// (`node-<id>.crt`, `node-<id>.key`) into `dir` (created, mode 0700; every file mode 0600).
/// ECDSA P-256 keys. The CA's own key is not kept: a member added later needs a new set (or
/// certificates from your own CA, given by path in `[tls]`). Returns the `[tls]` paths.
pub fn write_tls(cfg: &ClusterConfig, dir: &Path) -> Result<TlsFiles, CredentialError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let cert_err = |e: rcgen::Error| CredentialError::Certificate(e.to_string());
    let mut mk = std::fs::DirBuilder::new();
    mk.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        mk.mode(0o700);
    }
    mk.create(dir).map_err(|e| CredentialError::File {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Chorus cluster {:x} CA", cfg.cluster_id.0),
    );
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(cert_err)?;
    write_private(&dir.join("ca.crt"), ca_cert.pem().as_bytes())?;
    let issuer = Issuer::new(ca, ca_key);
    for n in &cfg.nodes {
        let name = member_name(cfg.cluster_id, n.id);
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut p = CertificateParams::new(vec![name.clone()]).map_err(cert_err)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer).map_err(cert_err)?;
        write_private(
            &dir.join(format!("node-{}.crt", n.id.0)),
            cert.pem().as_bytes(),
        )?;
        write_private(
            &dir.join(format!("node-{}.key", n.id.0)),
            key.serialize_pem().as_bytes(),
        )?;
    }
    let at = |f: &str| dir.join(f).display().to_string();
    Ok(TlsFiles {
        ca_file: at("ca.crt"),
        cert_file: at("node-{node}.crt"),
        key_file: at("node-{node}.key"),
    })
}

/// `cfg` with a fresh CA and member certificates written to `dir` ([`write_tls`]) and named
/// in its `[tls]` table.
pub fn with_new_tls(cfg: ClusterConfig, dir: &Path) -> Result<ClusterConfig, CredentialError> {
    let files = write_tls(&cfg, dir)?;
    Ok(cfg.with_tls(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_private_and_accepted() {
        let dir = std::env::temp_dir().join(format!("chorus-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.secret"), dir.join("b.secret"));
        write_secret_file(&a).unwrap();
        write_secret_file(&b).unwrap();
        let (ta, tb) = (
            std::fs::read_to_string(&a).unwrap(),
            std::fs::read_to_string(&b).unwrap(),
        );
        assert_eq!(ta.trim_end().len(), 2 * SECRET_RANDOM_BYTES);
        assert_ne!(ta, tb, "two secrets are equal");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Rewriting a world-readable file makes it private.
            std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
            write_secret_file(&a).unwrap();
            let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        crate::runtime::tcp::Secret::from_file(&a).expect("the TCP runtime takes it");
        assert_eq!(
            beside(Path::new("x/d.toml"), "secret"),
            PathBuf::from("x/d.secret")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
