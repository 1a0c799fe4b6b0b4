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

mod operations;
mod pacing;
mod relogin;
mod secrets;

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
