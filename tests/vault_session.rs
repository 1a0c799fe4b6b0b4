//! The VaultSession actor against the local platform's real OpenBao: vdbi's own login,
//! self-renewal, re-login after its token is revoked behind its back, the client-side rate
//! limit, deadlines, login failures, revoke-self at shutdown, and every typed operation.
//! Each test logs in with a throwaway kubernetes auth role bound to vdbi's ServiceAccount.

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;
use vdbi::actors::error::ActorError;
use vdbi::actors::supervision::{supervise, ActorHandle, Backoff};
use vdbi::actors::vault_session::*;
use vdbi::bookkeeping::BookkeepingEntry;
use vdbi::health::HealthState;
use vdbi::k8s::ServiceAccountJwt;
use vdbi::telemetry::Metrics;
use vdbi::vault::{VaultClient, VaultSettings, VaultToken};
use vdbi_testkit::platform::{install_crypto_provider, TestNamespace, VaultRoot};
use vdbi_testkit::vault::{client as vault_client, kube_client, settings, unique, VaultFixture};

/// A supervised VaultSession plus what the test observes it through.
struct Session {
    handle: ActorHandle<VaultSession>,
    metrics: Metrics,
    health: HealthState,
    fx: VaultFixture,
    root: VaultRoot,
    role: String,
    policy: String,
    _jwt: tempfile::NamedTempFile,
}

struct Opts {
    /// `token_ttl` of the test's auth role.
    token_ttl: &'static str,
    max_renew_interval: Duration,
    renew_increment: Duration,
    /// Log in with this role instead of the test's own (e.g. one that does not exist).
    role: Option<String>,
    adjust: fn(&mut VaultSettings),
    /// The session's logger (default: the test logger).
    log: Option<slog::Logger>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            token_ttl: "1h",
            max_renew_interval: Duration::from_secs(600),
            renew_increment: Duration::from_secs(3600),
            role: None,
            adjust: |_| {},
            log: None,
        }
    }
}

/// Everything the session's operations need (the legacy policy lacks lease revoke/list).
fn session_policy(fx: &VaultFixture) -> String {
    let (kv, db, auth) = (fx.kv_mount(), fx.db_mount(), fx.kube_auth_mount());
    format!(
        r#"path "{kv}/data/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{kv}/metadata/*" {{ capabilities = ["read", "delete", "list"] }}
path "auth/token/create-orphan" {{ capabilities = ["update", "sudo"] }}
path "auth/token/revoke-orphan" {{ capabilities = ["update", "sudo"] }}
path "auth/token/renew" {{ capabilities = ["update"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
path "auth/{auth}/role/*" {{ capabilities = ["read"] }}
path "{db}/creds/*" {{ capabilities = ["read"] }}
path "sys/leases/renew" {{ capabilities = ["update"] }}
path "sys/leases/lookup" {{ capabilities = ["update"] }}
path "sys/leases/lookup/*" {{ capabilities = ["list", "sudo"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
"#
    )
}

async fn start_session(opts: Opts) -> Session {
    install_crypto_provider();
    let fx = VaultFixture::get();
    let p = fx.platform.clone();
    let role = unique("vdbi-t-sess");
    let policy = role.clone();
    fx.put_policy(&policy, &session_policy(&fx)).await;
    fx.put_kube_role(
        &role,
        json!({
            "bound_service_account_names": "vdbi-injector",
            "bound_service_account_namespaces": p.var("VDBI_SYSTEM_NAMESPACE"),
            "token_policies": policy,
            "token_ttl": opts.token_ttl,
            "token_max_ttl": "2h",
        }),
    )
    .await;
    let jwt = vdbi_testkit::own_jwt(&p, "vdbi-injector").await;
    let mut s = settings(&p);
    (opts.adjust)(&mut s);
    let client = vault_client(s).expect("Vault client");
    let cfg = SessionConfig {
        auth_mount: fx.kube_auth_mount(),
        role: opts.role.unwrap_or_else(|| role.clone()),
        jwt_path: jwt.path().to_path_buf(),
        kv_mount: fx.kv_mount(),
        kv_prefix: unique("vdbi-t-sess-kv"),
        renew_increment: opts.renew_increment,
        max_renew_interval: opts.max_renew_interval,
    };
    let metrics = Metrics::new(false);
    let health = HealthState::new();
    let log = opts
        .log
        .unwrap_or_else(vdbi_testkit::log_lines::checked_logger);
    let handle = supervised_session(client, cfg, &metrics, &health, &log);
    Session {
        handle,
        metrics,
        health,
        root: p.vault_root(),
        fx,
        role,
        policy,
        _jwt: jwt,
    }
}

/// A VaultSession under a supervisor, as the binary runs it.
fn supervised_session(
    client: VaultClient,
    cfg: SessionConfig,
    metrics: &Metrics,
    health: &HealthState,
    log: &slog::Logger,
) -> ActorHandle<VaultSession> {
    let (m, h, l) = (metrics.clone(), health.clone(), log.clone());
    supervise(
        "vault-session",
        log,
        metrics,
        Backoff::default(),
        move |g| {
            VaultSession::new(
                g,
                client.clone(),
                cfg.clone(),
                m.clone(),
                h.clone(),
                l.clone(),
            )
        },
    )
}

impl Session {
    async fn wait_logged_in(&self) -> SessionDetails {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(info) = self.handle.send(SessionInfo).await.unwrap() {
                return info;
            }
            assert!(
                Instant::now() < until,
                "no session: {:?}",
                self.health.checks()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `auth/token/lookup-accessor` with the root token: the token's TTL, or None when gone.
    async fn lookup_accessor(&self, accessor: &str) -> Option<u64> {
        let r = self
            .root
            .request(
                Method::POST,
                "auth/token/lookup-accessor",
                Some(&json!({ "accessor": accessor })),
            )
            .await;
        if !r.status.is_success() {
            return None;
        }
        Some(r.body["data"]["ttl"].as_u64().expect("ttl"))
    }

    /// Waits (`within`) until the session holds another token than `old`'s.
    async fn wait_new_login(
        &self,
        old: &SessionDetails,
        within: Duration,
        what: &str,
    ) -> SessionDetails {
        let until = Instant::now() + within;
        loop {
            if let Some(i) = self.handle.send(SessionInfo).await.unwrap() {
                if i.accessor != old.accessor {
                    return i;
                }
            }
            assert!(Instant::now() < until, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Revokes the session's token with the root token, behind vdbi's back.
    async fn revoke_behind_its_back(&self, token: &SessionDetails) {
        self.root
            .write(
                "auth/token/revoke-accessor",
                &json!({ "accessor": token.accessor }),
            )
            .await;
    }

    async fn cleanup(self) {
        self.handle.shutdown();
        let _ = self.handle.send(RevokeOwnToken).await;
        self.fx.delete_kube_role(&self.role).await;
        self.fx.delete_policy(&self.policy).await;
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[actix::test]
async fn login_makes_the_session_ready() {
    let s = start_session(Opts::default()).await;
    let info = s.wait_logged_in().await;
    assert!(!info.accessor.is_empty());
    assert!(info.ttl > Duration::from_secs(3000), "{info:?}");
    assert!(s.handle.send(IsLoggedIn).await.unwrap());
    let check = s.health.check(HEALTH_CHECK).expect("vault-session check");
    assert!(check.ready, "{check:?}");
    assert!(s.health.is_ready());
    assert_eq!(
        s.metrics.count("vdbi_connect_vault_count_success", &[]),
        1.0
    );
    assert_eq!(s.metrics.count("vdbi_connect_vault_count_error", &[]), 0.0);
    assert_eq!(s.metrics.count("vdbi_vault_session_ready", &[]), 1.0);
    let rendered = s.metrics.render();
    assert!(rendered.contains("vdbi_connect_vault_count_success 1"));
    // Vault agrees: the token is live, vdbi's, and carries the role's policy.
    let ttl = s
        .lookup_accessor(&info.accessor)
        .await
        .expect("token is live");
    assert!(ttl > 3000, "{ttl}");
    let me = s
        .handle
        .send(CurrentToken { deadline: soon() })
        .await
        .unwrap()
        .unwrap();
    let looked = s
        .handle
        .send(LookupSelf {
            token: me,
            deadline: soon(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(looked.accessor, info.accessor);
    assert!(looked.policies.contains(&s.policy), "{looked:?}");
    s.cleanup().await;
}

#[actix::test]
async fn self_renewal_extends_the_token() {
    let s = start_session(Opts {
        token_ttl: "20s",
        max_renew_interval: Duration::from_secs(1),
        renew_increment: Duration::from_secs(600),
        ..Opts::default()
    })
    .await;
    let first = s.wait_logged_in().await;
    assert!(first.ttl <= Duration::from_secs(20), "{first:?}");
    let until = Instant::now() + Duration::from_secs(10);
    let renewed = loop {
        let info = s.handle.send(SessionInfo).await.unwrap().expect("session");
        if info.renewed_at.is_some() {
            break info;
        }
        assert!(Instant::now() < until, "no self-renewal in 10 s: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Same token, renewed past the role's 20 s TTL (Vault's own view).
    assert_eq!(renewed.accessor, first.accessor);
    assert!(renewed.ttl > Duration::from_secs(500), "{renewed:?}");
    let ttl = s.lookup_accessor(&first.accessor).await.expect("live");
    assert!(ttl > 500, "Vault's TTL after self-renewal: {ttl}");
    assert_eq!(
        s.metrics.count("vdbi_connect_vault_count_success", &[]),
        1.0,
        "no re-login"
    );
    s.cleanup().await;
}

#[actix::test]
async fn relogin_after_the_token_is_revoked_behind_its_back() {
    let s = start_session(Opts::default()).await;
    let old = s.wait_logged_in().await;
    s.revoke_behind_its_back(&old).await;
    assert_eq!(s.lookup_accessor(&old.accessor).await, None);
    // vdbi still believes in its token: the next operation is refused, and it logs in again.
    assert!(s.handle.send(IsLoggedIn).await.unwrap());
    let keys = s
        .handle
        .send(KvList { deadline: soon() })
        .await
        .unwrap()
        .expect("KvList succeeds after a re-login");
    assert!(keys.is_empty(), "{keys:?}");
    let new = s.wait_logged_in().await;
    assert_ne!(new.accessor, old.accessor);
    assert!(s.lookup_accessor(&new.accessor).await.is_some());
    assert_eq!(s.lookup_accessor(&old.accessor).await, None);
    assert_eq!(
        s.metrics.count("vdbi_connect_vault_count_success", &[]),
        2.0
    );
    assert!(s.health.is_ready());
    s.cleanup().await;
}

#[actix::test]
async fn relogin_when_self_renewal_fails() {
    let s = start_session(Opts {
        max_renew_interval: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let old = s.wait_logged_in().await;
    s.revoke_behind_its_back(&old).await;
    // No operation at all: the failing renewal alone triggers the new login.
    let new = s
        .wait_new_login(
            &old,
            Duration::from_secs(10),
            "no re-login after a failed renewal",
        )
        .await;
    assert!(s.lookup_accessor(&new.accessor).await.is_some());
    assert_eq!(
        s.metrics.count("vdbi_connect_vault_count_success", &[]),
        2.0
    );
    s.cleanup().await;
}

#[actix::test]
async fn rate_limit_applies_to_the_sessions_calls() {
    let s = start_session(Opts {
        adjust: |s| {
            s.rate_limit_per_sec = 5;
            s.rate_burst = 1;
        },
        ..Opts::default()
    })
    .await;
    s.wait_logged_in().await;
    // Let the bucket refill after the login, then 11 calls at 5/s with a burst of 1: ≥ 2 s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let n = 11u32;
    let started = Instant::now();
    // (the paced lane: the renewer's and the revoker's calls)
    let calls = (0..n).map(|_| s.handle.send(Paced(KvList { deadline: soon() })));
    for r in futures::future::join_all(calls).await {
        r.unwrap().expect("KvList");
    }
    let took = started.elapsed();
    let floor = Duration::from_secs_f64((n - 1) as f64 / 5.0);
    assert!(took >= floor.mul_f64(0.8), "{n} calls at 5/s took {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    s.cleanup().await;
}

/// A TCP listener that accepts and never answers.
async fn stalled_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            held.push(c);
        }
    });
    (addr, task)
}

#[actix::test]
async fn deadlines_bound_every_operation() {
    // Logged in: an already-passed deadline fails at once.
    let s = start_session(Opts::default()).await;
    s.wait_logged_in().await;
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        s.handle.send(KvList {
            deadline: Instant::now(),
        }),
    )
    .await
    .expect("an expired deadline never hangs")
    .unwrap();
    assert!(
        matches!(
            r,
            Err(ActorError::Deadline(_)) | Err(ActorError::NoSession(_))
        ),
        "{r:?}"
    );
    s.cleanup().await;

    // A Vault that accepts connections and never answers: the login hangs, operations do not.
    let (addr, task) = stalled_listener().await;
    let p = vdbi_testkit::platform::Platform::get();
    let jwt = vdbi_testkit::own_jwt(&p, "vdbi-injector").await;
    let client = vault_client(VaultSettings {
        address: format!("http://{addr}"),
        request_timeout: Duration::from_secs(60),
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    })
    .unwrap();
    let cfg = SessionConfig {
        auth_mount: "kubernetes".into(),
        role: "vdbi".into(),
        jwt_path: jwt.path().to_path_buf(),
        kv_mount: "kv".into(),
        kv_prefix: "p".into(),
        renew_increment: Duration::from_secs(3600),
        max_renew_interval: Duration::from_secs(600),
    };
    let (m, h) = (Metrics::new(false), HealthState::new());
    let log = vdbi::telemetry::logging::discard();
    let handle = supervised_session(client, cfg, &m, &h, &log);
    let started = Instant::now();
    let r = handle
        .send(KvGet {
            uuid: "x".into(),
            deadline: Instant::now() + Duration::from_millis(300),
        })
        .await
        .unwrap();
    assert!(matches!(r, Err(ActorError::NoSession(_))), "{r:?}");
    let r = handle
        .send(ReadHealth {
            deadline: Instant::now() + Duration::from_millis(300),
        })
        .await
        .unwrap();
    assert!(
        matches!(r, Err(ActorError::Deadline("ReadHealth"))),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!h.is_ready());
    handle.shutdown();
    let _ = handle.send(RevokeOwnToken).await;
    task.abort();
}

#[actix::test]
async fn login_failure_is_not_ready_but_alive() {
    let s = start_session(Opts {
        role: Some(unique("vdbi-t-no-such-role")),
        ..Opts::default()
    })
    .await;
    let until = Instant::now() + Duration::from_secs(10);
    while s.metrics.count("vdbi_connect_vault_count_error", &[]) < 1.0 {
        assert!(Instant::now() < until, "no failed login counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let check = s.health.check(HEALTH_CHECK).expect("check");
    assert!(!check.ready);
    assert!(check.message.contains("login failed"), "{check:?}");
    assert!(!s.health.is_ready());
    assert_eq!(s.health.wedged(), None, "liveness must not fail");
    assert_eq!(
        s.metrics.count("vdbi_connect_vault_count_success", &[]),
        0.0
    );
    assert_eq!(s.metrics.count("vdbi_vault_session_ready", &[]), 0.0);
    assert!(!s.handle.send(IsLoggedIn).await.unwrap());
    assert_eq!(s.handle.send(SessionInfo).await.unwrap(), None);
    let r = s
        .handle
        .send(KvList {
            deadline: Instant::now() + Duration::from_millis(300),
        })
        .await
        .unwrap();
    assert!(matches!(r, Err(ActorError::NoSession(_))), "{r:?}");
    s.cleanup().await;
}

#[actix::test]
async fn revoke_own_token_at_shutdown() {
    let s = start_session(Opts::default()).await;
    let info = s.wait_logged_in().await;
    assert!(s.lookup_accessor(&info.accessor).await.is_some());
    s.handle.shutdown();
    s.handle.send(RevokeOwnToken).await.unwrap();
    assert_eq!(s.lookup_accessor(&info.accessor).await, None, "revoked");
    assert!(!s.handle.send(IsLoggedIn).await.unwrap());
    assert_eq!(s.metrics.count("vdbi_vault_session_ready", &[]), 0.0);
    let r = s
        .handle
        .send(KvList {
            deadline: Instant::now() + Duration::from_secs(2),
        })
        .await
        .unwrap();
    assert!(matches!(r, Err(ActorError::NoSession(_))), "{r:?}");
    // No new login after shutdown.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.metrics.count("vdbi_connect_vault_count_success", &[]),
        1.0
    );
    s.cleanup().await;
}

#[actix::test]
async fn every_operation_through_the_actor() {
    let s = start_session(Opts::default()).await;
    s.wait_logged_in().await;
    let h = &s.handle;
    let (db, db_role) = (s.fx.db_mount(), s.fx.db_role());

    let health = h.call(ReadHealth { deadline: soon() }).await.unwrap();
    assert!(health.initialized && !health.sealed, "{health:?}");

    let role = h
        .call(ReadAuthRole {
            role: db_role.clone(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert!(role.token_policies.contains(&db_role), "{role:?}");

    // KV bookkeeping: put, get, list, delete.
    let uuid = unique("uuid");
    let entry = BookkeepingEntry {
        lease_id: "databases/creds/x/1".into(),
        token_id: "tok".into(),
        namespace: "ns".into(),
        service_account_name: "app".into(),
        pod_name: "pod".into(),
        node_name: "node".into(),
    };
    h.call(KvPut {
        uuid: uuid.clone(),
        entry: entry.clone(),
        deadline: soon(),
    })
    .await
    .unwrap();
    let got = h
        .call(KvGet {
            uuid: uuid.clone(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert_eq!(got, Some(entry));
    let keys = h.call(KvList { deadline: soon() }).await.unwrap();
    assert_eq!(keys, std::slice::from_ref(&uuid));
    h.call(KvDelete {
        uuid: uuid.clone(),
        deadline: soon(),
    })
    .await
    .unwrap();
    assert_eq!(
        h.call(KvGet {
            uuid: uuid.clone(),
            deadline: soon()
        })
        .await
        .unwrap(),
        None
    );
    assert!(h
        .call(KvList { deadline: soon() })
        .await
        .unwrap()
        .is_empty());

    // DB credentials with vdbi's own token, and their lease.
    let creds = h
        .call(ReadDbCredentials {
            token: None,
            mount: db.clone(),
            role: db_role.clone(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert!(!creds.username.is_empty());
    assert!(
        creds
            .lease_id
            .starts_with(&format!("{db}/creds/{db_role}/")),
        "{}",
        creds.lease_id
    );
    let lease = h
        .call(LookupLease {
            lease_id: creds.lease_id.clone(),
            deadline: soon(),
        })
        .await
        .unwrap()
        .expect("lease is live");
    assert_eq!(lease.id, creds.lease_id);
    let renewed = h
        .call(RenewLease {
            lease_id: creds.lease_id.clone(),
            increment: Duration::from_secs(600),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert_eq!(renewed.lease_id, creds.lease_id);
    assert!(renewed.ttl > Duration::ZERO);
    let listed = h
        .call(ListLeases {
            prefix: format!("{db}/creds/{db_role}/"),
            deadline: soon(),
        })
        .await
        .unwrap();
    let suffix = creds.lease_id.rsplit('/').next().unwrap().to_string();
    assert!(listed.contains(&suffix), "{suffix} not in {listed:?}");
    h.call(RevokeLease {
        lease_id: creds.lease_id.clone(),
        deadline: soon(),
    })
    .await
    .unwrap();
    let gone = h
        .call(LookupLease {
            lease_id: creds.lease_id.clone(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert_eq!(gone, None);

    // Legacy mode: an orphan token, credentials read with it, renew, revoke-orphan.
    let orphan = h
        .call(CreateOrphanToken {
            policies: vec![db_role.clone()],
            period: Duration::from_secs(3600),
            display_name: "injector-orphan-token".into(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert!(orphan.orphan, "{orphan:?}");
    let with_orphan = h
        .call(ReadDbCredentials {
            token: Some(orphan.token.clone()),
            mount: db.clone(),
            role: db_role.clone(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert!(!with_orphan.lease_id.is_empty());
    let ttl = h
        .call(RenewToken {
            target: orphan.token.clone(),
            increment: Duration::from_secs(3600),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert_eq!(ttl.accessor, orphan.accessor);
    let info = h
        .call(LookupSelf {
            token: orphan.token.clone(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert!(info.orphan && info.policies.contains(&db_role), "{info:?}");
    h.call(RevokeOrphan {
        target: orphan.token.clone(),
        deadline: soon(),
    })
    .await
    .unwrap();
    let dead = h
        .send(LookupSelf {
            token: orphan.token.clone(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert!(dead.is_err(), "revoked orphan token still valid");
    // revoke-orphan does not revoke the child lease; clean it up.
    h.call(RevokeLease {
        lease_id: with_orphan.lease_id.clone(),
        deadline: soon(),
    })
    .await
    .unwrap();

    // Projected mode: login with a pod's JWT, lookup-self, revoke-self.
    let kube = kube_client(&s.fx.platform).await;
    let ns = TestNamespace::create(&kube, "vdbi-t-sess").await;
    ns.service_account("app").await;
    let pod_jwt = ns.token("app", &["vault"]).await;
    let login = h
        .call(LoginKubernetes {
            role: db_role.clone(),
            jwt: ServiceAccountJwt::new(pod_jwt),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert!(login.token_policies.contains(&db_role), "{login:?}");
    let me = h
        .call(LookupSelf {
            token: login.token.clone(),
            deadline: soon(),
        })
        .await
        .unwrap();
    assert_eq!(me.accessor, login.accessor);
    h.call(RevokeSelf {
        token: login.token.clone(),
        deadline: soon(),
    })
    .await
    .unwrap();
    assert!(h
        .send(LookupSelf {
            token: login.token.clone(),
            deadline: soon()
        })
        .await
        .unwrap()
        .is_err());
    // Revoking an already-revoked token counts as done.
    h.call(RevokeSelf {
        token: login.token,
        deadline: soon(),
    })
    .await
    .unwrap();
    // A bogus token is refused as such.
    let bogus = h
        .send(LookupSelf {
            token: VaultToken::new("s.bogus"),
            deadline: soon(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        bogus.vault().is_some_and(|e| e.is_permission_denied()),
        "{bogus:?}"
    );
    ns.cleanup().await;
    s.cleanup().await;
}

#[actix::test]
async fn operations_do_not_bypass_the_login_backoff() {
    let s = start_session(Opts {
        role: Some(unique("vdbi-t-no-such-role")),
        ..Opts::default()
    })
    .await;
    // Callers keep asking while the login fails: the retries still follow the backoff
    // (0.5 s · 2^n: attempts at about 0 s, 1 s, 3 s), not one login per operation.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let r = s
            .handle
            .send(KvList {
                deadline: Instant::now() + Duration::from_millis(20),
            })
            .await
            .unwrap();
        assert!(matches!(r, Err(ActorError::NoSession(_))), "{r:?}");
    }
    let failures = s.metrics.count("vdbi_connect_vault_count_error", &[]);
    assert!(
        (1.0..=3.0).contains(&failures),
        "{failures} logins in 2.5 s despite the backoff"
    );
    s.cleanup().await;
}

#[actix::test]
async fn shutdown_during_a_login_leaks_no_token() {
    // Only tokens created during the test can be this session's.
    let root = vdbi_testkit::platform::Platform::get().vault_root();
    let before = accessors(&root).await;
    let s = start_session(Opts::default()).await;
    // RevokeOwnToken before the first login has answered.
    s.handle.shutdown();
    s.handle.send(RevokeOwnToken).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.handle.send(SessionInfo).await.unwrap(), None);
    // Every token this role ever issued is revoked: no live accessor carries its policy.
    let mut live = Vec::new();
    for a in accessors(&s.root).await.difference(&before) {
        let r = s
            .root
            .request(
                Method::POST,
                "auth/token/lookup-accessor",
                Some(&json!({ "accessor": a })),
            )
            .await;
        if r.status.is_success()
            && r.body["data"]["policies"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p == s.policy.as_str()))
        {
            live.push(a.clone());
        }
    }
    assert!(live.is_empty(), "leaked session tokens: {live:?}");
    s.cleanup().await;
}

#[actix::test]
async fn relogin_before_the_max_ttl_ends_the_token() {
    let s = start_session(Opts {
        token_ttl: "13s",
        max_renew_interval: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    s.fx.put_kube_role(
        &s.role,
        json!({
            "bound_service_account_names": "vdbi-injector",
            "bound_service_account_namespaces": s.fx.platform.var("VDBI_SYSTEM_NAMESPACE"),
            "token_policies": s.policy,
            "token_ttl": "13s",
            "token_max_ttl": "13s",
        }),
    )
    .await;
    // Log in again under the capped role (the first login may predate the rewrite).
    let first = s.wait_logged_in().await;
    s.revoke_behind_its_back(&first).await;
    let capped = s
        .wait_new_login(&first, Duration::from_secs(10), "no re-login")
        .await;
    // Renewals cannot pass 13 s; well before it ends, vdbi holds a fresh token.
    let fresh = s
        .wait_new_login(
            &capped,
            Duration::from_secs(8),
            "still on the capped token after 8 s",
        )
        .await;
    assert!(s.lookup_accessor(&fresh.accessor).await.is_some());
    // The capped token was revoked, not left to expire.
    assert_eq!(s.lookup_accessor(&capped.accessor).await, None);
    s.cleanup().await;
}

async fn accessors(root: &VaultRoot) -> std::collections::HashSet<serde_json::Value> {
    let list = root
        .request(
            Method::from_bytes(b"LIST").unwrap(),
            "auth/token/accessors",
            None,
        )
        .await
        .ok("list accessors");
    list["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .collect()
}

#[actix::test]
async fn a_paced_flood_never_delays_a_foreground_call() {
    // vaultRateLimit 1/s: 20 queued renewer/revoker calls would take 19 s.
    let s = start_session(Opts {
        adjust: |s| {
            s.rate_limit_per_sec = 1;
            s.rate_burst = 1;
        },
        ..Opts::default()
    })
    .await;
    s.wait_logged_in().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let h = s.handle.clone();
            tokio::spawn(async move { h.send(Paced(KvList { deadline })).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // an admission's call goes straight through
    let started = Instant::now();
    for _ in 0..5 {
        s.handle
            .send(KvList { deadline: soon() })
            .await
            .unwrap()
            .expect("foreground KvList");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "5 foreground calls took {took:?}"
    );
    let done = flood.iter().filter(|f| f.is_finished()).count();
    assert!(
        done < 10,
        "the paced calls were not paced ({done} of 20 done)"
    );
    for f in flood {
        f.abort();
    }
    s.cleanup().await;
}

#[actix::test]
async fn a_paced_caller_that_gives_up_releases_its_place() {
    let s = start_session(Opts {
        adjust: |s| {
            s.rate_limit_per_sec = 1;
            s.rate_burst = 1;
        },
        ..Opts::default()
    })
    .await;
    s.wait_logged_in().await;
    let first = s
        .handle
        .send(Paced(KvList { deadline: soon() }))
        .await
        .unwrap();
    first.expect("first paced call");
    // ten callers whose deadline passes while they wait for a slot
    let quitters = (0..10).map(|_| {
        s.handle.send(Paced(KvList {
            deadline: Instant::now() + Duration::from_millis(300),
        }))
    });
    for r in futures::future::join_all(quitters).await {
        assert!(
            matches!(r.unwrap(), Err(ActorError::Deadline(_))),
            "a call past its deadline must fail"
        );
    }
    // they took no slot: the next call waits for at most the one second after the first,
    // not behind ten abandoned slots
    let started = Instant::now();
    s.handle
        .send(Paced(KvList { deadline: soon() }))
        .await
        .unwrap()
        .expect("paced call after the quitters");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    s.cleanup().await;
}

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
