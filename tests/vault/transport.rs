//! The transport under every call: rate limiting, deadlines, TLS, a sealed Vault, one
//! connection pool for all tokens.

use super::*;

#[tokio::test]
async fn rate_limiter_spaces_real_calls() {
    // 11 calls at 20/s with a burst of 1: at least (11 - 1) / 20 = 500 ms.
    let fx = VaultFixture::with(|s| {
        s.rate_limit_per_sec = 20;
        s.rate_burst = 1;
    });
    let t0 = Instant::now();
    let calls = (0..11).map(|_| {
        let c = fx.client.clone();
        tokio::spawn(async move { c.health().await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().expect("health");
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // a burst of 10 goes at once (generous bound)
    let fx = VaultFixture::with(|s| {
        s.rate_limit_per_sec = 1;
        s.rate_burst = 10;
    });
    let t0 = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = fx.client.clone();
            tokio::spawn(async move { c.health().await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("health");
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// A TCP listener that accepts connections and never answers.
async fn stalled_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

fn client_for(address: String, timeout: Duration) -> VaultClient {
    vault_client(VaultSettings {
        address,
        request_timeout: timeout,
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn deadlines_and_transport_errors() {
    let (addr, task) = stalled_listener().await;
    let token = VaultToken::new("s.x");

    // the caller's deadline bounds a call to a server that never answers
    let c = client_for(format!("http://{addr}"), Duration::from_secs(120));
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(300), c.token_lookup_self(&token)).await;
    assert!(r.is_err(), "expected the deadline to fire");
    assert!(t0.elapsed() < Duration::from_secs(5));

    // the client's own request timeout gives a Timeout error
    let c = client_for(format!("http://{addr}"), Duration::from_millis(300));
    let e = c.token_lookup_self(&token).await.unwrap_err();
    assert_eq!(e, VaultError::Timeout);
    assert!(e.is_retryable());
    let e = c.health().await.unwrap_err();
    assert_eq!(e, VaultError::Timeout);
    task.abort();

    // connection refused: Transport
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = client_for(format!("http://{free}"), Duration::from_secs(5));
    let e = c.health().await.unwrap_err();
    assert!(matches!(e, VaultError::Transport(_)), "{e:?}");
    assert!(e.is_retryable());

    // a proxy error page echoing the request: Api 502, retryable, the token masked
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).replace("\r\n", " ");
            let resp = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{req}",
                req.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let secret = VaultToken::new("s.very-secret-token");
    let c = client_for(format!("http://{addr}"), Duration::from_secs(5));
    let e = c.token_lookup_self(&secret).await.unwrap_err();
    assert_eq!(e.status(), Some(502), "{e}");
    assert!(e.is_retryable());
    assert!(!format!("{e} {e:?}").contains("very-secret"), "{e}");
    assert!(e.to_string().contains("x-vault-token: ***"), "{e}");
    echo.abort();

    // TLS to a server that does not speak TLS: Transport
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let garbage = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot tls")
                .await;
        }
    });
    let c = client_for(format!("https://{addr}"), Duration::from_secs(5));
    let e = c.token_lookup_self(&token).await.unwrap_err();
    assert!(matches!(e, VaultError::Transport(_)), "{e:?}");
    assert!(!e.to_string().contains("s.x"));
    garbage.abort();
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    // A TLS server whose certificate is signed by a throwaway CA: trusted with ca_cert_file,
    // refused without it, accepted with skip_verify.
    use std::sync::Arc;
    vdbi::tls::install_crypto_provider();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let server_cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                if buf[..n].starts_with(b"GET /v1/auth/token/lookup-self") {
                    // a redirect to plain http must not be followed (the token would travel)
                    let _ = tls
                        .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/v1/auth/token/lookup-self\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                    return;
                }
                let body =
                    r#"{"initialized":true,"sealed":false,"standby":false,"version":"tls-test"}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });

    let base = VaultSettings {
        address: format!("https://{addr}"),
        request_timeout: Duration::from_secs(5),
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    };
    let trusted = vault_client(VaultSettings {
        ca_cert_file: Some(ca_file),
        ..base.clone()
    })
    .unwrap();
    assert_eq!(trusted.health().await.unwrap().version, "tls-test");
    let e = trusted
        .token_lookup_self(&VaultToken::new("s.x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VaultError::Transport(m) if m.contains("https to http")),
        "{e:?}"
    );
    let untrusted = vault_client(base.clone()).unwrap();
    let e = untrusted.health().await.unwrap_err();
    assert!(matches!(e, VaultError::Transport(_)), "{e:?}");
    let skip = vault_client(VaultSettings {
        skip_verify: true,
        ..base
    })
    .unwrap();
    assert!(skip.health().await.unwrap().is_active());
    server.abort();
}

/// A throwaway in-memory OpenBao dev server (the platform's `bao` binary), sealed on purpose:
/// cheap (about a second) and the only way to see real sealed answers.
#[tokio::test]
async fn sealed_vault_is_classified() {
    let fx = VaultFixture::get();
    let bao = fx
        .platform
        .try_var("VDBI_BAO_BIN")
        .unwrap_or_else(|| "bao".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = VaultToken::new(unique("root"));
    let mut child = tokio::process::Command::new(&bao)
        .args([
            "server",
            "-dev",
            "-dev-no-store-token",
            &format!("-dev-root-token-id={}", root.expose()),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{bao} server -dev` (set VDBI_BAO_BIN?): {e}"));
    let c = client_for(format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
    eventually("the dev server answers", || async {
        c.health().await.is_ok_and(|h| h.is_active())
    })
    .await;
    c.logical_write(&root, "sys/seal", &json!({}))
        .await
        .expect("seal");

    let h = c
        .health()
        .await
        .expect("health of a sealed server is not an error");
    assert!(h.sealed && !h.is_active(), "{h:?}");
    let e = c.token_lookup_self(&root).await.unwrap_err();
    assert_eq!(e, VaultError::Sealed);
    assert!(e.is_sealed() && e.is_retryable());
    let e = c
        .login_kubernetes("kubernetes", "r", "jwt")
        .await
        .unwrap_err();
    assert_eq!(e.login_failure_reason(), "vault_sealed", "{e}");

    let _ = child.kill().await;
}

/// A bare HTTP/1.1 keep-alive responder that counts connections and records request heads:
/// it observes the wire (pooling, headers), it does not stand in for Vault.
async fn recording_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (c2, h2) = (conns.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let heads = h2.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut head = String::new();
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        head.push_str(&lower);
                    }
                    let mut body = vec![0u8; len];
                    let _ = r.read_exact(&mut body).await;
                    heads.lock().unwrap().push(head);
                    let json = r#"{"data":{"accessor":"acc","ttl":5}}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                        json.len()
                    );
                    if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns, heads)
}

#[tokio::test]
async fn one_connection_pool_for_all_tokens() {
    let (addr, conns, heads) = recording_server().await;
    let client = vault_client(VaultSettings {
        address: format!("http://{addr}"),
        namespace: Some("team-a".into()),
        request_timeout: Duration::from_secs(5),
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    })
    .unwrap();
    for i in 0..5 {
        let c = client.clone();
        let info = c
            .token_lookup_self(&VaultToken::new(format!("s.token-{i}")))
            .await
            .unwrap();
        assert_eq!(info.accessor, "acc");
    }
    // five tokens, five clones, one connection
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 5);
    for (i, h) in heads.iter().enumerate() {
        assert!(
            h.starts_with("get /v1/auth/token/lookup-self http/1.1"),
            "{h}"
        );
        assert!(
            h.contains(&format!("x-vault-token: s.token-{i}\r\n")),
            "{h}"
        );
        assert!(h.contains("x-vault-namespace: team-a\r\n"), "{h}");
        assert!(h.contains("x-vault-request: true\r\n"), "{h}");
    }
}
