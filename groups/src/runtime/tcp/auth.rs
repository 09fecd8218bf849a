//! The cluster secret and the HMAC proofs of the authentication handshake (see the parent
//! module's documentation, "Peer authentication").

use super::TcpError;
use crate::frame::NONCE_BYTES;
use crate::ids::NodeId;
use hmac::{Hmac, Mac};
use rand::TryRng;
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;

pub(super) const LABEL_ACCEPTOR: &[u8] = b"chorus-v2 acceptor";
pub(super) const LABEL_DIALER: &[u8] = b"chorus-v2 dialer";

/// The cluster secret that authenticates peers (see the module documentation). Its bytes are
/// the HMAC key; its `Debug` form does not show them.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Shortest secret accepted, in bytes.
    pub const MIN_BYTES: usize = 16;

    /// A secret of exactly these bytes (nothing is trimmed).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, TcpError> {
        Self::checked(bytes.as_ref(), "given".into())
    }

    /// Reads a secret file: its content less trailing whitespace and newlines. A relative
    /// path is resolved against the current working directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TcpError> {
        let path = path.as_ref();
        let shown = if path.is_relative() {
            match std::env::current_dir() {
                Ok(cwd) => format!(
                    "{} (relative to the working directory, i.e. {})",
                    path.display(),
                    cwd.join(path).display()
                ),
                Err(_) => path.display().to_string(),
            }
        } else {
            path.display().to_string()
        };
        let bytes = std::fs::read(path).map_err(|e| TcpError::SecretFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %shown,
                        "the cluster secret file is readable by other users; consider chmod 600"
                    );
                }
            }
        }
        Self::checked(bytes.trim_ascii_end(), format!("in file {shown:?}"))
    }

    fn checked(bytes: &[u8], origin: String) -> Result<Self, TcpError> {
        if bytes.len() < Self::MIN_BYTES {
            return Err(TcpError::SecretTooShort {
                origin,
                len: bytes.len(),
            });
        }
        Ok(Secret(Arc::from(bytes)))
    }

    pub(super) fn mac(
        &self,
        label: &[u8],
        cluster: u64,
        dialer: NodeId,
        acceptor: NodeId,
        na: &[u8; NONCE_BYTES],
        nb: &[u8; NONCE_BYTES],
    ) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        m.update(label);
        m.update(&cluster.to_le_bytes());
        m.update(&dialer.0.to_le_bytes());
        m.update(&acceptor.0.to_le_bytes());
        m.update(na);
        m.update(nb);
        m
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes, redacted>)", self.0.len())
    }
}

pub(super) fn fresh_nonce() -> Result<[u8; NONCE_BYTES], String> {
    let mut n = [0u8; NONCE_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut n)
        .map_err(|e| format!("no randomness for a handshake nonce: {e}"))?;
    Ok(n)
}
