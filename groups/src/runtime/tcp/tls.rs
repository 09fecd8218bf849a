//! Mutual TLS for the TCP runtime: rustls configurations from the `[tls]` files, and the check
//! that a peer's certificate names the member its `Hello` claims (see the parent module's
//! documentation, "TLS").

use super::TcpError;
use crate::config::TlsFiles;
use crate::credentials::member_name;
use crate::ids::{ClusterId, NodeId};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SupportedProtocolVersion};
use std::sync::Arc;

/// Plaintext a connection's TLS layer buffers for sending before it pushes back.
const TLS_BUFFER_BYTES: usize = 1 << 20;
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A node's TLS set-up: how it dials (its certificate as client, the CA as roots) and how it
/// accepts (its certificate as server, every dialer's certificate verified against the CA).
pub(super) struct TlsContext {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    cluster_id: ClusterId,
}

fn bad(what: String) -> TcpError {
    TcpError::Tls(what)
}

impl TlsContext {
    /// Loads the CA, this node's certificate and key, and checks that the certificate names
    /// this node.
    pub(super) fn load(
        files: &TlsFiles,
        cluster_id: ClusterId,
        me: NodeId,
    ) -> Result<Self, TcpError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::pem_file_iter(&files.ca_file)
            .map_err(|e| bad(format!("CA file {:?}: {e}", files.ca_file)))?;
        for cert in ca {
            let cert = cert.map_err(|e| bad(format!("CA file {:?}: {e}", files.ca_file)))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("CA file {:?}: {e}", files.ca_file)))?;
        }
        if roots.is_empty() {
            return Err(bad(format!(
                "CA file {:?} holds no certificate",
                files.ca_file
            )));
        }
        let cert_path = files.cert_of(me);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| bad(format!("certificate file {cert_path:?}: {e}")))?;
        let Some(leaf) = certs.first() else {
            return Err(bad(format!(
                "certificate file {cert_path:?} holds no certificate"
            )));
        };
        check_names(leaf, cluster_id, me)
            .map_err(|e| bad(format!("certificate file {cert_path:?}: {e}")))?;
        let key_path = files.key_of(me);
        warn_if_readable(&key_path);
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| bad(format!("key file {key_path:?}: {e}")))?;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(|e| bad(format!("{cert_path:?} with {key_path:?}: {e}")))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| bad(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(|e| bad(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| bad(format!("{cert_path:?} with {key_path:?}: {e}")))?;
        Ok(TlsContext {
            client: Arc::new(client),
            server: Arc::new(server),
            cluster_id,
        })
    }

    /// The TLS side of a connection this node dials to `peer`: the peer's certificate must
    /// chain to the CA and name `peer` (rustls checks the server name).
    pub(super) fn dial(&self, peer: NodeId) -> Result<Connection, String> {
        let name =
            ServerName::try_from(member_name(self.cluster_id, peer)).map_err(|e| e.to_string())?;
        let mut c = ClientConnection::new(self.client.clone(), name).map_err(|e| e.to_string())?;
        c.set_buffer_limit(Some(TLS_BUFFER_BYTES));
        Ok(c.into())
    }

    /// The TLS side of an accepted connection: the dialer must present a certificate that
    /// chains to the CA (which member it names is checked at its `Hello`, [`peer_is`]).
    pub(super) fn accept(&self) -> Result<Connection, String> {
        let mut c = ServerConnection::new(self.server.clone()).map_err(|e| e.to_string())?;
        c.set_buffer_limit(Some(TLS_BUFFER_BYTES));
        Ok(c.into())
    }

    /// Checks that the dialer of `conn` (handshake complete) presented a certificate naming
    /// `node`.
    pub(super) fn peer_is(&self, conn: &Connection, node: NodeId) -> Result<(), String> {
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no client certificate")?;
        check_names(leaf, self.cluster_id, node)
    }
}

/// Whether `cert` names node `node` of the cluster.
fn check_names(
    cert: &CertificateDer<'_>,
    cluster_id: ClusterId,
    node: NodeId,
) -> Result<(), String> {
    let name = member_name(cluster_id, node);
    let server_name = ServerName::try_from(name.as_str()).map_err(|e| e.to_string())?;
    webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?
        .verify_is_valid_for_subject_name(&server_name)
        .map_err(|_| format!("the certificate does not name {name}"))
}

fn warn_if_readable(path: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path,
                    "the TLS key file is readable by other users; consider chmod 600"
                );
            }
        }
    }
}
