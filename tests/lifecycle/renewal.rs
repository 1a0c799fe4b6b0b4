//! The renewer: live pods' credentials are extended and nothing else; the zero-pods guard;
//! unrecoverable leases and metadata-only entries are purged.

use super::*;

/// The renewer extends the token and lease of live pods (seen through Vault's own lookups),
/// backfills PodName/ServiceAccountName, and leaves alone the entries of another release (other
/// prefix) and of pods outside its label.
#[actix_rt::test]
async fn renewer_extends_live_pods_and_leaves_other_releases_alone() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let other = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-renew").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    // Ours: a live pod (entry without PodName, to be backfilled).
    let ours = issue(&root, &p, "app-rw", "1h").await;
    record(&root, &p, &rel.prefix, &ours, &ns.name, "").await;
    create_pod(&pods, &labelled_pod("ours", &rel.label, &[&ours.uuid])).await;
    // Our prefix, but the pod carries the other release's label only.
    let foreign_label = issue(&root, &p, "app-rw", "1h").await;
    record(&root, &p, &rel.prefix, &foreign_label, &ns.name, "theirs-a").await;
    create_pod(
        &pods,
        &labelled_pod("theirs-a", &other.label, &[&foreign_label.uuid]),
    )
    .await;
    // The other release's prefix and label.
    let foreign = issue(&root, &p, "app-rw", "1h").await;
    record(&root, &p, &other.prefix, &foreign, &ns.name, "theirs-b").await;
    create_pod(
        &pods,
        &labelled_pod("theirs-b", &other.label, &[&foreign.uuid]),
    )
    .await;

    // The scenario: the token ages a little, so that a renewal shows in its TTL.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = token_info(&root, &ours.token).await.unwrap();
    assert!(before["last_renewal_time"].is_null());
    assert!(before["ttl"].as_u64().unwrap() < 3600);
    let lease_before = lease_info(&root, &ours.lease_id).await.unwrap();
    assert!(lease_before["ttl"].as_u64().unwrap() <= 3600);

    let mut cfg = release_config(&p, &rel, Mode::Renewer, "renewer-0");
    cfg.sync_ttl_second = 2;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(RENEWER_LEASE).await;
    let m = &inst.running.metrics;
    let t = Instant::now();
    while m.count("vdbi_synchronization_count_success", &[]) < 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no renewal cycle ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = token_info(&root, &ours.token).await.unwrap();
    assert!(
        !after["last_renewal_time"].is_null(),
        "token not renewed: {after}"
    );
    assert!(after["ttl"].as_u64().unwrap() >= 3599);
    let lease_after = lease_info(&root, &ours.lease_id).await.unwrap();
    assert!(!lease_after["last_renewal"].is_null(), "lease not renewed");
    assert!(
        lease_after["ttl"].as_u64().unwrap() > 20 * 3600,
        "lease TTL not extended to max_ttl: {lease_after}"
    );
    let e = kv_entry(&root, &p, &rel.prefix, &ours.uuid).await.unwrap();
    assert_eq!(e["PodName"], "ours");
    assert_eq!(e["ServiceAccountName"], "default");
    for i in [&foreign_label, &foreign] {
        let t = token_info(&root, &i.token).await.unwrap();
        assert!(
            t["last_renewal_time"].is_null(),
            "another release's token was renewed"
        );
        let l = lease_info(&root, &i.lease_id).await.unwrap();
        assert!(
            l["last_renewal"].is_null(),
            "another release's lease was renewed"
        );
    }
    // TTL-aware: the next cycle renews nothing (plenty of TTL left).
    let report = inst.run_cycle().await.unwrap();
    assert_eq!(report.live, 1, "{report:?}");
    assert_eq!(
        (report.tokens_renewed, report.leases_renewed),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(report.skipped, 2, "{report:?}");
    assert_eq!(
        m.count(
            "vdbi_renew_token_count_success",
            &[
                ("uuid", ours.uuid.as_str()),
                ("namespace", ns.name.as_str())
            ]
        ),
        1.0
    );
    assert!(
        m.value("vdbi_last_synchronization_success", &[]).is_some(),
        "the leader exports its last success"
    );
    let gauge = format!(
        "vdbi_lease_expiration{{namespace=\"{}\",uuid=\"{}\"}}",
        ns.name, ours.uuid
    );
    assert!(m.render().contains(&gauge), "no {gauge}");
    // The pod lives on, but its entry is revoked (by the revoker, another process): the renewer's
    // next cycle drops every per-uuid series of it.
    purge(&root, &p, &rel.prefix, std::slice::from_ref(&ours)).await;
    let report = inst.run_cycle().await.unwrap();
    assert_eq!(report.entries, 0, "{report:?}");
    let text = m.render();
    assert!(
        !text.contains(&ours.uuid),
        "series of a revoked entry remain:\n{text}"
    );
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[ours, foreign_label]).await;
    purge(&root, &p, &other.prefix, &[foreign]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
    other.leases.cleanup().await;
}

/// Zero live pods while entries exist: the cycle refuses and touches nothing.
#[actix_rt::test]
async fn zero_pods_guard_touches_nothing() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-zero").await;
    let i = issue(&root, &p, "app-rw", "1h").await;
    record(&root, &p, &rel.prefix, &i, &ns.name, "").await;
    let inst = start_instance(
        &p,
        &rel,
        release_config(&p, &rel, Mode::Renewer, "renewer-0"),
    )
    .await;
    inst.wait_leading(RENEWER_LEASE).await;
    let err = inst.run_cycle().await.expect_err("the cycle must refuse");
    assert!(
        matches!(err, ActorError::BrokenView { entries: 1 }),
        "{err}"
    );
    assert!(token_info(&root, &i.token).await.unwrap()["last_renewal_time"].is_null());
    assert!(lease_info(&root, &i.lease_id).await.unwrap()["last_renewal"].is_null());
    let e = kv_entry(&root, &p, &rel.prefix, &i.uuid).await.unwrap();
    assert_eq!(e["PodName"], "");
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_synchronization_count_error", &[]),
        1.0
    );
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_synchronization_count_success", &[]),
        0.0
    );
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[i]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// A lease that became unrecoverable (its role was deleted: renew answers 400 `could not find
/// role`) gets its entry purged by the renewer, token revoked.
#[actix_rt::test]
async fn unrecoverable_lease_entry_is_purged() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-unrec").await;
    ns.service_account("default").await;
    let role = OwnRole::create(&root, &p).await;
    let pods: Api<Pod> = ns.api();
    let doomed = issue(&root, &p, &role.name, "1h").await;
    record(&root, &p, &rel.prefix, &doomed, &ns.name, "doomed").await;
    create_pod(&pods, &labelled_pod("doomed", &rel.label, &[&doomed.uuid])).await;
    let fine = issue(&root, &p, "app-ro", "1h").await;
    record(&root, &p, &rel.prefix, &fine, &ns.name, "fine").await;
    create_pod(&pods, &labelled_pod("fine", &rel.label, &[&fine.uuid])).await;
    root.request(
        Method::DELETE,
        &format!("{}/roles/{}", p.var("VDBI_DB_MOUNT"), role.name),
        None,
    )
    .await;

    let inst = start_instance(
        &p,
        &rel,
        release_config(&p, &rel, Mode::Renewer, "renewer-0"),
    )
    .await;
    inst.wait_leading(RENEWER_LEASE).await;
    let report = inst.run_cycle().await.unwrap();
    assert_eq!(report.purged, 1, "{report:?}");
    assert!(kv_entry(&root, &p, &rel.prefix, &doomed.uuid)
        .await
        .is_none());
    assert!(
        token_info(&root, &doomed.token).await.is_none(),
        "token of the purged entry not revoked"
    );
    assert!(all_alive(&root, &p, &rel.prefix, &fine).await);
    assert!(!token_info(&root, &fine.token).await.unwrap()["last_renewal_time"].is_null());
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[fine]).await;
    role.delete(&root, &p).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// Entries whose data was deleted but whose metadata remains (a deletion cut short, or by hand):
/// the renewer does not count them (no "zero live pods" refusal because of them) and the sweep
/// deletes their metadata once past the grace.
#[actix_rt::test]
async fn metadata_only_entries_are_deleted_by_the_sweep_and_not_counted() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let grace = Duration::from_secs(10);
    let mut cfg = release_config(&p, &rel, Mode::All, "all-0");
    cfg.revoker_unseen_grace = grace;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    inst.wait_leading(RENEWER_LEASE).await;
    let kv = p.var("VDBI_KV_MOUNT");
    for n in 0..3 {
        let path = format!("{kv}/data/{}/hollow-{n}", rel.prefix);
        root.write(
            &path,
            &json!({"data": {"LeaseId": "", "TokenId": "", "Namespace": "x"}}),
        )
        .await;
        root.request(Method::DELETE, &path, None).await;
    }
    let t0 = Instant::now();
    assert_eq!(kv_keys(&root, &p, &rel.prefix).await.len(), 3);
    let report = inst
        .run_cycle()
        .await
        .expect("a cycle despite zero live pods");
    assert_eq!(report.entries, 0, "metadata-only entries are not counted");
    let env = ProcEnv::new(&p, &rel).await;
    let took = until(&env, "metadata deleted", 2 * grace, || async {
        kv_keys(&root, &p, &rel.prefix).await.is_empty()
    })
    .await;
    println!(
        "3 metadata-only entries deleted {:.1} s after they appeared (grace {grace:?})",
        (t0.elapsed().max(took)).as_secs_f64()
    );
    // The listing is empty as soon as Vault has deleted the last one; the sweep counts it when
    // the answer reaches it, a moment later.
    until(
        &env,
        "3 deletions counted",
        Duration::from_secs(5),
        || async {
            inst.running
                .metrics
                .count("vdbi_hollow_entries_deleted_total", &[])
                == 3.0
        },
    )
    .await;
    inst.running.shutdown().await;
    rel.leases.cleanup().await;
}

/// Reservations (NRI mode, at `<prefix>-reservations`, outside vault-db-injector's listing):
/// one whose entry was completed is deleted at the next sweep; one whose pod never appeared is
/// deleted once unseen for the grace (it names no Vault object), within two graces.
#[actix_rt::test]
async fn stale_and_completed_reservations_are_deleted_by_the_sweep() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-resv").await;
    let grace = Duration::from_secs(10);
    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = grace;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    let kv = p.var("VDBI_KV_MOUNT");
    let reservations = vdbi::bookkeeping::reservation_prefix(&rel.prefix);
    let reserve = |uuid: String| {
        let (root, path) = (root.clone(), format!("{kv}/data/{reservations}/{uuid}"));
        let ns = ns.name.clone();
        async move {
            root.write(
                &path,
                &json!({"data": {"LeaseId": "", "TokenId": "", "Namespace": ns,
                    "ServiceAccountName": "app", "PodName": "p", "NodeName": ""}}),
            )
            .await
        }
    };
    // completed: the entry holds a real token and lease
    let done = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &done, &ns.name, "completed").await;
    reserve(done.uuid.clone()).await;
    // stale: its pod never appeared, no entry
    let stale = uuid::Uuid::new_v4().to_string();
    reserve(stale.clone()).await;
    let t0 = Instant::now();
    let sweep = || async {
        inst.running
            .revoker
            .as_ref()
            .unwrap()
            .send(Sweep)
            .await
            .unwrap()
            .unwrap()
    };
    sweep().await;
    assert!(kv_entry(&root, &p, &reservations, &done.uuid)
        .await
        .is_none());
    assert!(
        kv_entry(&root, &p, &reservations, &stale).await.is_some(),
        "deleted before the grace"
    );
    let env = ProcEnv::new(&p, &rel).await;
    let took = until(&env, "stale reservation deleted", 2 * grace, || async {
        kv_keys(&root, &p, &reservations).await.is_empty()
    })
    .await;
    let took = t0.elapsed().max(took);
    println!(
        "stale reservation deleted {:.1} s after it was written (grace {grace:?})",
        took.as_secs_f64()
    );
    // due a grace after it was first seen, less the sweeps' tolerance (a tenth of a period)
    assert!(took + grace / 20 >= grace, "{took:?}");
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[done]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}
