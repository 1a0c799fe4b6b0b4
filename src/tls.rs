//! Process-wide TLS set-up.
//!
//! Both kube (ring) and reqwest (`rustls-no-provider`) use rustls 0.23, which needs one process-wide
//! [`rustls::crypto::CryptoProvider`]. vdbi uses **ring** everywhere; install it before building
//! any TLS client or server.

/// Installs rustls' ring crypto provider as the process default. Idempotent: a provider that is
/// already installed (by an earlier call or by anyone else) is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn install_is_idempotent() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
