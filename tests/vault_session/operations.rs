//! Every typed operation of the session, through the actor, against real OpenBao.

use super::*;

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
