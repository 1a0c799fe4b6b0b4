//! Orphan leases: leases of vdbi's roles that no entry records are found and revoked after
//! the grace.

use super::*;

/// Leases Vault holds under the roles this release uses but that no entry records (a crash
/// between issuing and recording) are reported, and in `revoke` mode revoked once older than
/// the grace; younger ones, recorded ones and other roles' are left alone.
#[actix_rt::test]
async fn orphan_leases_are_found_and_revoked_after_the_grace() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-orphan").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let role = OwnRole::create(&root, &p).await;
    let grace = Duration::from_secs(10);

    let recorded = issue(&root, &p, &role.name, "1h").await;
    record(&root, &p, &rel.prefix, &recorded, &ns.name, "web").await;
    create_pod(&pods, &labelled_pod("web", &rel.label, &[&recorded.uuid])).await;
    let old_orphan = issue(&root, &p, &role.name, "1h").await;
    // Not a role of this release: never examined, however old.
    let other_role = issue(&root, &p, "app-ro", "1h").await;
    // The scenario: the old orphan ages past the grace before the young one is issued.
    tokio::time::sleep(grace + Duration::from_secs(1)).await;
    let young_orphan = issue(&root, &p, &role.name, "1h").await;
    let young_at = Instant::now();

    // Report mode: counted, nothing revoked.
    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = Duration::from_secs(2);
    cfg.orphan_lease_grace = grace;
    cfg.orphan_lease_discovery = OrphanLeaseMode::Report;
    let inst = start_instance(&p, &rel, cfg.clone()).await;
    inst.wait_leading(REVOKER_LEASE).await;
    let revoker = inst.running.revoker.clone().unwrap();
    // A pass learns the roles from the entries, the next one lists their leases.
    let pass = || async {
        loop {
            match revoker.send(DiscoverOrphans).await.unwrap() {
                Err(ActorError::Busy(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                other => return other.unwrap(),
            }
        }
    };
    let mut report = pass().await;
    for _ in 0..20 {
        if report.orphans > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        report = pass().await;
    }
    assert_eq!(report.orphans, 1, "{report:?}");
    assert_eq!(report.revoked, 0, "{report:?}");
    assert_eq!(report.unknown_entries, 0, "{report:?}");
    assert!(report.leases >= 3, "{report:?}");
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_orphan_leases_found_total", &[]),
        1.0
    );
    assert!(lease_info(&root, &old_orphan.lease_id).await.is_some());
    // Counted once, however many passes see it.
    pass().await;
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_orphan_leases_found_total", &[]),
        1.0
    );
    inst.running.shutdown().await;

    // Revoke mode.
    cfg.orphan_lease_discovery = OrphanLeaseMode::Revoke;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    let m = inst.running.metrics.clone();
    let t = Instant::now();
    while lease_info(&root, &old_orphan.lease_id).await.is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "old orphan lease not revoked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if young_at.elapsed() < grace {
        assert!(
            lease_info(&root, &young_orphan.lease_id).await.is_some(),
            "an orphan younger than the grace was revoked"
        );
    }
    assert!(pg_connect(&p, &old_orphan.username, &old_orphan.password)
        .await
        .is_err());
    // The young one goes once it is old enough.
    while lease_info(&root, &young_orphan.lease_id).await.is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "young orphan lease never revoked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(young_at.elapsed() >= grace);
    assert!(
        all_alive(&root, &p, &rel.prefix, &recorded).await,
        "a recorded lease was revoked"
    );
    assert!(
        lease_info(&root, &other_role.lease_id).await.is_some(),
        "another role's lease was revoked"
    );
    assert_eq!(m.count("vdbi_orphan_leases_revoked_total", &[]), 2.0);
    assert_eq!(m.count("vdbi_orphan_leases_found_total", &[]), 2.0);
    inst.running.shutdown().await;

    purge(
        &root,
        &p,
        &rel.prefix,
        &[recorded, old_orphan, young_orphan, other_role],
    )
    .await;
    role.delete(&root, &p).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}
