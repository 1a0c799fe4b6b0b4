//! Webhook caller authentication: the webhook answer is a credential in legacy and projected
//! modes, so only kube-apiserver may ask for one. With `webhookClientCAFile` set, every TLS
//! handshake must present a client certificate that chains to that bundle (rustls'
//! `WebPkiClientVerifier`: signature, validity period, `clientAuth` usage) and, when
//! `webhookClientAllowedNames` is set, whose subject CN or a DNS subjectAltName is one of those
//! names. A peer without such a certificate fails the handshake: it never reaches the HTTP layer,
//! so nothing is parsed and nothing is issued.
//!
//! The CA bundle is re-read like the serving pair (same interval); a bad new bundle keeps the old
//! one and counts `vdbi_webhook_certificate_reloads_total{result="error"}`. Refused certificates
//! count `vdbi_admission_denied_total{reason="client_certificate"}` and are logged (a handshake
//! without any certificate is refused by rustls before the verifier runs: it is only logged by
//! the TLS layer).

use super::tls::TlsError;
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use slog::{info, warn, Logger};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Builds a `WebPkiClientVerifier` trusting the PEM bundle at `path`.
fn load_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::ClientCa {
        path: path.into(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate found".into()));
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// The names a certificate answers to: its subject CNs and DNS subjectAltNames.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

/// The client-certificate verifier of the webhook: WebPKI chain verification against the
/// configured CA bundle (swapped on reload), then the allowed-name check.
pub struct ClientAuth {
    ca_file: PathBuf,
    allowed: Vec<String>,
    inner: ArcSwap<Arc<dyn ClientCertVerifier>>,
    metrics: Metrics,
    log: Logger,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("ca_file", &self.ca_file)
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl ClientAuth {
    pub fn new(
        ca_file: &Path,
        allowed: &[String],
        metrics: Metrics,
        log: Logger,
    ) -> Result<Arc<ClientAuth>, TlsError> {
        Ok(Arc::new(ClientAuth {
            ca_file: ca_file.to_path_buf(),
            allowed: allowed.to_vec(),
            inner: ArcSwap::from_pointee(load_verifier(ca_file)?),
            metrics,
            log,
        }))
    }

    fn refuse(&self, why: &str, detail: &str) {
        self.metrics.admission.handshake_refused();
        warn!(self.log, "webhook caller refused at the TLS handshake"; "reason" => why, "detail" => detail);
    }

    fn name_allowed(&self, der: &[u8]) -> Result<(), Vec<String>> {
        if self.allowed.is_empty() {
            return Ok(());
        }
        let names = certificate_names(der);
        if names.iter().any(|n| self.allowed.iter().any(|a| a == n)) {
            Ok(())
        } else {
            Err(names)
        }
    }

    /// Re-reads the CA bundle; keeps the current one when the new one is unusable.
    fn reload(&self) -> Result<(), TlsError> {
        let v = load_verifier(&self.ca_file)?;
        self.inner.store(Arc::new(v));
        Ok(())
    }
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients send their configured certificate; vdbi does not advertise its CAs.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .load()
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(e) = &verified {
            self.refuse("untrusted", &e.to_string());
            return verified;
        }
        if let Err(names) = self.name_allowed(end_entity) {
            self.refuse("name_not_allowed", &format!("certificate names {names:?}"));
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.load().supported_verify_schemes()
    }
}

/// Polls the CA bundle every `interval` and swaps in a changed, valid one. Runs until dropped
/// (the caller runs it under supervision).
pub async fn ca_reload_loop(
    auth: Arc<ClientAuth>,
    interval: Duration,
    metrics: Metrics,
    log: Logger,
) {
    {
        let mut last = std::fs::read(&auth.ca_file).ok();
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = std::fs::read(&auth.ca_file).ok();
            if now.is_none() || now == last {
                continue;
            }
            match auth.reload() {
                Ok(()) => {
                    last = now;
                    metrics.process.cert_reload(true);
                    info!(log, "webhook client CA bundle reloaded"; "file" => %auth.ca_file.display());
                }
                Err(e) => {
                    metrics.process.cert_reload(false);
                    warn!(log, "webhook client CA reload failed; keeping the previous one"; "error" => %e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cn_and_dns_sans() {
        let mut params = rcgen::CertificateParams::new(vec!["webhook.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-webhook-client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let names = certificate_names(cert.der());
        assert!(names.contains(&"kube-apiserver-webhook-client".to_string()));
        assert!(names.contains(&"webhook.example".to_string()));
        assert!(certificate_names(b"not a certificate").is_empty());
    }
}
