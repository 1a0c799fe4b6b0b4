//! Posting AdmissionReviews to vdbi's webhook directly, as an attacker inside the cluster network
//! would (or, with the platform's webhook client identity, as kube-apiserver does): raw TLS
//! (tokio-rustls) and HTTP/1.1, so a refused handshake is told apart from an HTTP answer.
//!
//! Used as `vdbi_testkit::forged`.

use crate::platform::Platform;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client certificate and key (PEM).
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What kube-apiserver presents to webhooks on the platform.
pub fn apiserver_identity(p: &Platform) -> Identity {
    Identity {
        cert_pem: std::fs::read_to_string(p.var("VDBI_WEBHOOK_CLIENT_CERT_FILE")).unwrap(),
        key_pem: std::fs::read_to_string(p.var("VDBI_WEBHOOK_CLIENT_KEY_FILE")).unwrap(),
    }
}

/// The platform's admin client certificate: same CA as the apiserver's, another name.
pub fn admin_identity(p: &Platform) -> Identity {
    Identity {
        cert_pem: std::fs::read_to_string(p.var("VDBI_KUBE_ADMIN_CERT_FILE")).unwrap(),
        key_pem: std::fs::read_to_string(p.var("VDBI_KUBE_ADMIN_KEY_FILE")).unwrap(),
    }
}

/// A client certificate named `cn` (clientAuth) issued by a CA vdbi has never seen.
pub fn unknown_ca_identity(cn: &str) -> Identity {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "vdbi-platform-ca");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// POSTs `body` to `https://addr/mutate` with `content_type`, trusting `server_pem`, presenting
/// `identity` if any. `Err` when TLS (handshake or the first read after it) fails. Raw rustls and
/// HTTP/1.1, not reqwest like the other review clients: a forged request must choose its client
/// identity (or none), send any content type and see exactly where the server refused it.
pub async fn post(
    addr: SocketAddr,
    server_pem: &str,
    identity: Option<&Identity>,
    content_type: &str,
    body: &[u8],
) -> Result<Answer, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match identity {
        Some(id) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // With TLS 1.3 the client finishes its side before the server has checked the certificate:
    // the refusal (an alert) shows on the first write or read.
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    tls.write_all(body)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        body: body.to_string(),
    })
}

/// An AdmissionReview (`admission.k8s.io/v1`) of `operation` on the labelled `pod` in `ns`.
pub fn review(ns: &str, operation: &str, pod: &Value, dry_run: bool) -> Value {
    let uid = uuid::Uuid::new_v4().to_string();
    crate::review::admission_review(&uid, ns, &pod["metadata"]["name"], operation, pod, dry_run)
}

/// A labelled pod asking for one classic dbConfig `db` of `role`, as JSON.
pub fn pod_json(name: &str, sa: &str, role: &str) -> Value {
    serde_json::to_value(crate::pod(
        name,
        sa,
        &[("db.role", role), ("db.env-key-dbuser", "DB_USER")],
    ))
    .unwrap()
}
