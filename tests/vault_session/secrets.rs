//! No password, token or JWT in any log line (library records included) or error text.

use super::*;

/// Every JSON line a logger wrote (vdbi's keys), for grepping.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn logger(&self) -> slog::Logger {
        use slog::Drain;
        let json = slog_json::Json::new(self.clone())
            .set_newlines(true)
            .add_key_value(slog::o!(
                "level" => slog::FnValue(|r: &slog::Record| r.level().as_str()),
                "message" => slog::PushFnValue(|r: &slog::Record, ser| ser.emit(r.msg())),
            ))
            .build();
        slog::Logger::root(
            std::sync::Mutex::new(json).fuse(),
            slog::o!("app" => "vdbi"),
        )
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Issues credentials, provokes each error class it can (missing role, bad and revoked
/// tokens, a database whose connection is dead, an unreachable Vault, a Vault that never
/// answers), with library records (`log`, `tracing`: vaultrs, rustify, hyper, rustls) bridged
/// into the same log, then greps every log line and every error's Display/Debug for the
/// password, the tokens and the JWT.
#[actix::test]
async fn no_secret_reaches_a_log_line_or_an_error() {
    let cap = Capture::default();
    let log = cap.logger();
    vdbi::telemetry::library_logs::install(&log.new(slog::o!("component" => "library")));
    // the bridge forwards library warnings, drops vaultrs's own events and debug records
    log::warn!(target: "ttrpc::probe", "bridge-probe-log");
    tracing::warn!(target: "kube_client::probe", answer = 42, "bridge-probe-tracing");
    tracing::error!(target: "vaultrs::api", "bridge-probe-vaultrs");
    log::debug!(target: "rustls::probe", "bridge-probe-debug");

    let s = start_session(Opts {
        log: Some(log.new(slog::o!("component" => "vault-session"))),
        ..Opts::default()
    })
    .await;
    s.wait_logged_in().await;
    let own = s
        .handle
        .send(CurrentToken { deadline: soon() })
        .await
        .unwrap()
        .unwrap();
    let (db, role) = (s.fx.db_mount(), s.fx.db_role());
    let mut errors: Vec<String> = Vec::new();
    let mut note = |e: ActorError| errors.push(format!("{e} {e:?}"));

    // credentials: with vdbi's token and with an orphan token
    let creds = s
        .handle
        .send(ReadDbCredentials {
            token: None,
            mount: db.clone(),
            role: role.clone(),
            deadline: soon(),
        })
        .await
        .unwrap()
        .expect("credentials");
    let orphan = s
        .handle
        .send(CreateOrphanToken {
            policies: vec![s.policy.clone()],
            period: Duration::from_secs(600),
            display_name: "injector-orphan-token".into(),
            deadline: soon(),
        })
        .await
        .unwrap()
        .expect("orphan token");
    let creds2 = s
        .handle
        .send(ReadDbCredentials {
            token: Some(orphan.token.clone()),
            mount: db.clone(),
            role: role.clone(),
            deadline: soon(),
        })
        .await
        .unwrap()
        .expect("credentials with the orphan token");

    // a missing DB role, a missing auth role (404)
    note(
        s.handle
            .send(ReadDbCredentials {
                token: None,
                mount: db.clone(),
                role: "nope-xyz".into(),
                deadline: soon(),
            })
            .await
            .unwrap()
            .unwrap_err(),
    );
    note(
        s.handle
            .send(ReadAuthRole {
                role: unique("nope"),
                deadline: soon(),
            })
            .await
            .unwrap()
            .unwrap_err(),
    );
    // a bad token, and the orphan token once revoked (403)
    let bogus = VaultToken::new("s.bogus-token-value-123");
    note(
        s.handle
            .send(LookupSelf {
                token: bogus.clone(),
                deadline: soon(),
            })
            .await
            .unwrap()
            .unwrap_err(),
    );
    s.handle
        .send(RevokeOrphan {
            target: orphan.token.clone(),
            deadline: soon(),
        })
        .await
        .unwrap()
        .unwrap();
    note(
        s.handle
            .send(ReadDbCredentials {
                token: Some(orphan.token.clone()),
                mount: db.clone(),
                role: role.clone(),
                deadline: soon(),
            })
            .await
            .unwrap()
            .unwrap_err(),
    );
    note(
        s.handle
            .send(RenewToken {
                target: orphan.token.clone(),
                increment: Duration::from_secs(60),
                deadline: soon(),
            })
            .await
            .unwrap()
            .unwrap_err(),
    );
    // a DB role of our own whose connection is dead (Vault's error names the connection)
    let dead = unique("vdbi-t-deaddb");
    let db_admin_password = format!("adm-{}", unique("pw"));
    s.root
        .write(
            &format!("{db}/config/{dead}"),
            &json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/postgres",
                "username": "vdbi-dead-admin",
                "password": db_admin_password,
                "allowed_roles": [dead.clone()],
                "verify_connection": false,
            }),
        )
        .await;
    s.root
        .write(
            &format!("{db}/roles/{dead}"),
            &json!({
                "db_name": dead.clone(),
                "creation_statements": ["CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}';"],
                "default_ttl": "1m",
            }),
        )
        .await;
    let e = s
        .handle
        .send(ReadDbCredentials {
            token: None,
            mount: db.clone(),
            role: dead.clone(),
            deadline: soon(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, ActorError::Vault(v) if v.status().is_some()),
        "{e}"
    );
    note(e);
    s.root
        .request(Method::DELETE, &format!("{db}/roles/{dead}"), None)
        .await;
    s.root
        .request(Method::DELETE, &format!("{db}/config/{dead}"), None)
        .await;

    // an unreachable Vault, and one that never answers (timeout): logins fail and are logged
    let p = vdbi_testkit::platform::Platform::get();
    let jwt = vdbi_testkit::own_jwt(&p, "vdbi-injector").await;
    let jwt_text = std::fs::read_to_string(jwt.path()).unwrap();
    let (stalled, task) = stalled_listener().await;
    for (address, timeout) in [
        ("http://127.0.0.1:1".to_string(), Duration::from_secs(5)),
        (format!("http://{stalled}"), Duration::from_millis(500)),
    ] {
        let client = vault_client(VaultSettings {
            address,
            request_timeout: timeout,
            rate_limit_per_sec: 0,
            ..VaultSettings::default()
        })
        .unwrap();
        // the transport error and the timeout themselves
        let e = client
            .login_kubernetes(&s.fx.kube_auth_mount(), &s.role, jwt_text.trim())
            .await
            .unwrap_err();
        assert!(matches!(e.class(), "transport" | "timeout"), "{e}");
        note(ActorError::Vault(e));
        let cfg = SessionConfig {
            auth_mount: s.fx.kube_auth_mount(),
            role: s.role.clone(),
            jwt_path: jwt.path().to_path_buf(),
            kv_mount: s.fx.kv_mount(),
            kv_prefix: unique("vdbi-t-sess-kv"),
            renew_increment: Duration::from_secs(3600),
            max_renew_interval: Duration::from_secs(600),
        };
        let (m, h) = (Metrics::new(false), HealthState::new());
        let down = supervised_session(client, cfg, &m, &h, &log);
        let e = down
            .send(KvList {
                deadline: Instant::now() + Duration::from_secs(3),
            })
            .await
            .unwrap()
            .unwrap_err();
        note(e);
        let until = Instant::now() + Duration::from_secs(15);
        while m.count("vdbi_connect_vault_count_error", &[]) < 1.0 {
            assert!(Instant::now() < until, "the login never failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        down.shutdown();
    }
    task.abort();
    s.cleanup().await;

    let lines = cap.text();
    assert!(lines.contains("bridge-probe-log"), "{lines}");
    assert!(lines.contains("bridge-probe-tracing answer=42"), "{lines}");
    assert!(!lines.contains("bridge-probe-vaultrs"), "{lines}");
    assert!(!lines.contains("bridge-probe-debug"), "{lines}");
    assert!(lines.contains("Vault login failed"), "{lines}");
    for line in lines.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert_eq!(errors.len(), 10, "{errors:?}");
    let secrets = [
        ("password", creds.password.expose().as_str()),
        ("password (orphan)", creds2.password.expose().as_str()),
        ("DB admin password", db_admin_password.as_str()),
        ("vdbi's token", own.expose()),
        ("orphan token", orphan.token.expose()),
        ("bad token", bogus.expose()),
        ("JWT", jwt_text.trim()),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 8, "{what} too short to grep");
        assert!(!lines.contains(secret), "{what} in the log");
        for e in &errors {
            assert!(!e.contains(secret), "{what} in an error: {e}");
        }
    }
}
