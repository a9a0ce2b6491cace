//! TLS to upstream servers: the rustls client config of a group with `tls`, its trust
//! roots (a CA file, or the system's bundle) and the name checked and sent as SNI.
//! Built where configs load; connections use it on their worker.

use super::certs::read_chain;
use super::TlsError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the system's CA bundle is looked for, in order (Debian and Ubuntu, Fedora
/// and RHEL, Alpine and macOS, openSUSE), unless `SSL_CERT_FILE` names one.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// A group's `tls` settings, loaded.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the certificate; `None`: each
    /// server's address (an IP name: no SNI, the certificate must list the IP).
    pub sni: Option<ServerName<'static>>,
    /// The CA file, when not the system's bundle.
    pub ca: Option<PathBuf>,
    /// False: any certificate is accepted (`verify = false`).
    pub verify: bool,
    /// What connections use.
    pub config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("ca", &self.ca)
            .field("verify", &self.verify)
            .finish()
    }
}

impl UpstreamTls {
    /// Builds the client config: TLS 1.2 and 1.3, ALPN `http/1.1`, server certificates
    /// verified against `ca` (or the system's roots) unless `verify` is false.
    pub fn load(
        sni: Option<&str>,
        ca: Option<PathBuf>,
        verify: bool,
    ) -> Result<UpstreamTls, TlsError> {
        let sni = match sni {
            None => None,
            Some(name) => Some(ServerName::try_from(name.to_string()).map_err(|_| {
                TlsError::Setup(format!("`{name}` is not a DNS name or IP address"))
            })?),
        };
        let provider = Arc::new(super::provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let mut config = if verify {
            let bundle = match &ca {
                Some(path) => path.clone(),
                None => system_bundle()?,
            };
            builder
                .with_root_certificates(roots(&bundle)?)
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamTls {
            sni,
            ca,
            verify,
            config: Arc::new(config),
        })
    }
}

/// The system's CA bundle: `SSL_CERT_FILE`, else the first of [`SYSTEM_BUNDLES`].
fn system_bundle() -> Result<PathBuf, TlsError> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(path.into());
    }
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            TlsError::Setup(format!(
                "no system CA bundle ({}): install ca-certificates, or give `ca`",
                SYSTEM_BUNDLES.join(", ")
            ))
        })
}

/// The trust roots in a PEM bundle; at least one must load.
fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(read_chain(path)?);
    if added == 0 {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no usable CA certificate".into(),
        });
    }
    Ok(store)
}

/// `verify = false`: accepts any certificate, still checking the handshake signatures
/// (the session is encrypted, but to whoever answered).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
