//! The login's lifecycle at its edges: the login backoff, shutdown during a login, re-login
//! before the token's max TTL.

use super::*;

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
