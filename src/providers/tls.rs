//! The TLS configurations: the one client configuration shared by the HTTP client and the
//! WebSocket client, and those the SIP transport builds from `[sip]`'s files.
//!
//! Roots come from the system store (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`), because a
//! fleet may add its own CA there; a board image without `ca-certificates` still reaches cloud
//! services through Mozilla's roots, bundled in the binary as the fallback. The crypto is ring
//! (no OpenSSL, no aws-lc), which cross-compiles to the boards with a plain gcc.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}", path.display())]
pub struct TlsFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it and what was expected.
    pub what: String,
}

/// Where the trusted roots came from, for `hark check` and the startup log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The system store, with this many certificates.
    System(usize),
    /// Mozilla's bundled roots: the system store was empty or unreadable.
    Bundled(usize),
}

/// The process-wide client configuration, built on first use.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    shared().0.clone()
}

/// Where [`client_config`]'s roots came from.
pub fn root_source() -> RootSource {
    shared().1
}

/// A client configuration trusting only the CAs in `ca_pem` (a PBX with its own CA), or the
/// shared one when `None`.
pub fn client_config_trusting(
    ca_pem: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, TlsFileError> {
    let Some(path) = ca_pem else {
        return Ok(client_config());
    };
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates(path)?);
    if added == 0 {
        return Err(TlsFileError {
            path: path.into(),
            what: "no usable CA certificate in it".into(),
        });
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A server configuration presenting the chain in `cert_pem` with the key in `key_pem`; the
/// key must belong to the first certificate.
pub fn server_config(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    let chain = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| TlsFileError {
        path: key_pem.into(),
        what: format!("expected a PEM private key: {e}"),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsFileError {
            path: key_pem.into(),
            what: format!("not usable with {}: {e}", cert_pem.display()),
        })?;
    Ok(Arc::new(config))
}

/// The certificates of a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let error = |what: String| TlsFileError {
        path: path.into(),
        what,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(format!("cannot read it: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("expected PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(error("expected PEM certificates, found none".into()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn shared() -> &'static (Arc<rustls::ClientConfig>, RootSource) {
    static CONFIG: OnceLock<(Arc<rustls::ClientConfig>, RootSource)> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let (roots, source) = roots();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tracing::debug!(?source, "TLS roots loaded");
        (Arc::new(config), source)
    })
}

/// The system's roots, or the bundled ones when the system has none usable.
fn roots() -> (RootCertStore, RootSource) {
    let mut store = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "system TLS roots: skipped");
    }
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added > 0 {
        return (store, RootSource::System(added));
    }
    tracing::info!("no system TLS roots found; using the bundled Mozilla roots");
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let n = store.len();
    (store, RootSource::Bundled(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_never_empty() {
        // This machine has ca-certificates; a board without them gets the bundled set. Either
        // way a TLS handshake has roots to check against.
        match root_source() {
            RootSource::System(n) | RootSource::Bundled(n) => assert!(n > 50, "{n} roots"),
        }
        assert!(
            Arc::strong_count(&client_config()) >= 2,
            "one shared config"
        );
    }

    #[test]
    fn an_unusable_certificate_key_or_ca_file_is_named_with_what_is_wrong() {
        let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
        let missing = pki.join("missing.pem");
        let cases = [
            (
                client_config_trusting(Some(&missing)).map(|_| ()),
                &missing,
                "cannot read it",
            ),
            (
                client_config_trusting(Some(&pki.join("peer.key"))).map(|_| ()),
                &pki.join("peer.key"),
                "expected PEM certificates, found none",
            ),
            (
                server_config(&pki.join("peer.pem"), &pki.join("peer.pem")).map(|_| ()),
                &pki.join("peer.pem"),
                "expected a PEM private key",
            ),
        ];
        for (result, path, what) in cases {
            let err = result.expect_err(what);
            assert_eq!(&err.path, path);
            assert!(err.to_string().contains(what), "{err}");
        }
        assert!(server_config(&pki.join("peer.pem"), &pki.join("peer.key")).is_ok());
    }
}
