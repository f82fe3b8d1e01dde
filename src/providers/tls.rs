//! The one TLS client configuration, shared by the HTTP client and the WebSocket client.
//!
//! Roots come from the system store (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`), because a
//! fleet may add its own CA there; a board image without `ca-certificates` still reaches cloud
//! services through Mozilla's roots, bundled in the binary as the fallback. The crypto is ring
//! (no OpenSSL, no aws-lc), which cross-compiles to the boards with a plain gcc.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;

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

fn shared() -> &'static (Arc<rustls::ClientConfig>, RootSource) {
    static CONFIG: OnceLock<(Arc<rustls::ClientConfig>, RootSource)> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let (roots, source) = roots();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
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
}
