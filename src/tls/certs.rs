//! Certificates for TLS listeners: PEM files loaded and checked (readable, a key that
//! matches its certificate) when a config is validated, and the rustls server config
//! built from them, with the certificate picked by SNI. Runs where configs load (the
//! main thread at start, the control thread on reload, `ringway check`); the built
//! config is shared read-only by every worker.

use super::TlsError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One certificate chain and its key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The PEM chain, leaf first.
    pub cert: PathBuf,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A TLS listener's certificates, loaded, and the rustls config serving them.
#[derive(Clone)]
pub struct ServerTls {
    /// The files, in config order (the first is the default certificate).
    pub files: Vec<CertFiles>,
    /// What handshakes on the listener use.
    pub config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    // The config holds keys: only the file names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    /// Loads every pair in `files` (at least one) and builds the server config:
    /// TLS 1.2 and 1.3, ALPN `http/1.1`, the certificate chosen by SNI.
    pub fn load(files: Vec<CertFiles>) -> Result<ServerTls, TlsError> {
        let mut keys = Vec::with_capacity(files.len());
        for f in &files {
            keys.push(Arc::new(certified_key(f)?));
        }
        let provider = Arc::new(super::provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni { keys }));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            files,
            config: Arc::new(config),
        })
    }
}

/// Reads a chain and its key and checks that they belong together.
fn certified_key(f: &CertFiles) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(&f.cert)?;
    let key = read_key(&f.key)?;
    let signer = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: f.key.clone(),
            message: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(_) => Err(TlsError::Mismatch {
            cert: f.cert.clone(),
            key: f.key.clone(),
        }),
    }
}

/// The certificates in a PEM file, leaf first; at least one.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        chain.push(item.map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?);
    }
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(chain)
}

/// The private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block".into(),
            e => e.to_string(),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Picks the first certificate valid for the client's SNI name, else the first one.
#[derive(Debug)]
struct BySni {
    /// In config order; never empty (validation needs one pair at least).
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.keys.len() > 1 {
            if let Some(name) = hello
                .server_name()
                .and_then(|n| ServerName::try_from(n).ok())
            {
                let fits = |k: &&Arc<CertifiedKey>| {
                    k.end_entity_cert().is_ok_and(|der| {
                        webpki::EndEntityCert::try_from(der)
                            .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                    })
                };
                if let Some(k) = self.keys.iter().find(fits) {
                    return Some(k.clone());
                }
            }
        }
        self.keys.first().cloned()
    }
}
