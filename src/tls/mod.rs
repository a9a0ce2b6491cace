//! TLS with rustls (ring as its crypto provider): sessions on monoio sockets
//! ([`stream`]), listener certificates chosen by SNI ([`certs`]) and upstream client
//! configs ([`upstream`]). Configs are built where configs load; sessions live on the
//! worker that owns their connection.

pub mod certs;
pub mod stream;
pub mod upstream;

pub use certs::{CertFiles, ServerTls};
pub use stream::TlsStream;
pub use upstream::UpstreamTls;

use std::path::PathBuf;

/// The crypto every TLS config here uses: rustls' ring provider (builds with a C
/// compiler only, unlike aws-lc-rs, which needs cmake).
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Why TLS material could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not the PEM expected.
    #[error("{path}: {message}", path = .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A key rustls cannot use.
    #[error("{path}: unusable private key: {message}", path = .path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        message: String,
    },
    /// The key is not the certificate's.
    #[error("{key} is not the private key of the certificate in {cert}", key = .key.display(), cert = .cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the settings.
    #[error("TLS setup: {0}")]
    Setup(String),
}
