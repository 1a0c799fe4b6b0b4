//! Webhook TLS: rustls (ring provider), TLS 1.2+, and a certificate resolver that reloads
//! `tls.crt`/`tls.key` when they change on disk (cert-manager rotation, kubelet's atomic `..data`
//! swap) without a restart and without dropping connections. A bad new pair keeps the old one
//! serving and counts `vdbi_webhook_certificate_reloads_total{result="error"}`.

use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use slog::{info, warn, Logger};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate and key do not match: {0}")]
    Mismatch(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("cannot use webhook client CA bundle {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// Loads a PEM chain and key into a `CertifiedKey`, checking that they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.into(),
            reason: "no certificate found".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.into(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| TlsError::Mismatch(e.to_string()))
}

/// Serves the current certificate; swapped atomically on reload.
#[derive(Debug)]
pub struct ReloadingResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingResolver {
    pub fn new(initial: CertifiedKey) -> Arc<ReloadingResolver> {
        Arc::new(ReloadingResolver {
            current: ArcSwap::from_pointee(initial),
        })
    }

    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// DER of the leaf certificate currently served.
    pub fn leaf(&self) -> Vec<u8> {
        self.current.load().cert[0].to_vec()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The webhook's rustls server configuration (TLS 1.2 and 1.3, HTTP/1.1). With `client_auth`,
/// every caller must present a certificate that verifier accepts (see [`super::client_auth`]).
pub fn server_config(
    resolver: Arc<ReloadingResolver>,
    client_auth: Option<Arc<super::client_auth::ClientAuth>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let cfg = match client_auth {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(resolver);
    Ok(cfg)
}

fn fingerprint(cert: &Path, key: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    Some((std::fs::read(cert).ok()?, std::fs::read(key).ok()?))
}

/// Polls the files every `interval` and swaps in a new pair when their content changes.
/// Reading content (not mtimes) follows kubelet's symlink swaps of Secret volumes. Runs until
/// dropped (the caller runs it under supervision).
pub async fn reload_loop(
    resolver: Arc<ReloadingResolver>,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    metrics: Metrics,
    log: Logger,
) {
    {
        let mut last = fingerprint(&cert, &key);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = fingerprint(&cert, &key);
            if now.is_none() || now == last {
                continue;
            }
            match load_certified_key(&cert, &key) {
                Ok(k) => {
                    resolver.swap(k);
                    last = now;
                    metrics.process.cert_reload(true);
                    info!(log, "webhook certificate reloaded"; "cert" => %cert.display());
                }
                Err(e) => {
                    // Half-written rotation or a bad pair: keep serving the old one, retry later.
                    metrics.process.cert_reload(false);
                    warn!(log, "webhook certificate reload failed; keeping the previous one"; "error" => %e);
                }
            }
        }
    }
}
