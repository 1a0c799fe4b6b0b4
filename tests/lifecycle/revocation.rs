//! The revoker: a pod's credentials go when the pod goes (watch, sweep after a restart,
//! pods that never appeared, finished pods), and not when only its label is removed.

use super::*;

/// Pods admitted by vdbi's webhook, then deleted: leases, tokens and KV entries are gone within
/// 2 s of the DELETE, and PostgreSQL refuses the credentials.
#[actix_rt::test]
async fn deleted_pods_lose_their_credentials_within_two_seconds() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-watch").await;
    ns.service_account("app").await;
    ns.service_account("default").await;
    let inst = start_instance(&p, &rel, release_config(&p, &rel, Mode::All, "replica-a")).await;
    inst.wait_leading(REVOKER_LEASE).await;
    // The instance's JWT directory stays alive with `_identity` (vdbi re-reads it at login).
    let Instance {
        running,
        _dir: _identity,
        _cert: cert,
    } = inst;
    let vdbi = Vdbi {
        running,
        prefix: rel.prefix.clone(),
        cert,
        jwt_file: tempfile::NamedTempFile::new().unwrap(),
        chart: None,
    };
    let wh = register_webhook(&client, &vdbi, &ns.name).await;
    let pods: Api<Pod> = ns.api();

    // Three pods, two databases each.
    let mut admitted = Vec::new();
    let mut uids = Vec::new();
    for n in 0..3 {
        let mut pod = pod(
            &format!("app-{n}"),
            "app",
            &[
                ("main.role", "app-rw"),
                ("main.env-key-dbuser", "DB_USER"),
                ("main.env-key-dbpassword", "DB_PASSWORD"),
                ("ro.role", "app-ro"),
                ("ro.env-key-dbuser", "RO_USER"),
                ("ro.env-key-dbpassword", "RO_PASSWORD"),
            ],
        );
        pod.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(rel.label.clone(), "true".into());
        let stored = create_pod(&pods, &pod).await;
        let env = env_map(&stored, "app");
        let mut issued = Vec::new();
        for (uuid, (user, pass)) in uuids(&stored)
            .into_iter()
            .zip([("DB_USER", "DB_PASSWORD"), ("RO_USER", "RO_PASSWORD")])
        {
            let e = kv_entry(&root, &p, &rel.prefix, &uuid)
                .await
                .expect("entry written at admission");
            issued.push(Issued {
                uuid,
                token: e["TokenId"].as_str().unwrap().to_string(),
                lease_id: e["LeaseId"].as_str().unwrap().to_string(),
                username: env[user].clone(),
                password: env[pass].clone(),
            });
        }
        for i in &issued {
            assert!(all_alive(&root, &p, &rel.prefix, i).await);
            pg_connect(&p, &i.username, &i.password)
                .await
                .expect("credentials work while the pod lives");
        }
        uids.push(stored.metadata.uid.clone().unwrap());
        admitted.push((stored.metadata.name.clone().unwrap(), issued));
    }
    // The watch has delivered the pods before they are deleted.
    wait_indexed(&vdbi.running, &uids).await;

    let mut figures = Vec::new();
    for (name, issued) in &admitted {
        let t0 = Instant::now();
        pods.delete(name, &DeleteParams::default()).await.unwrap();
        let took = t0.elapsed()
            + wait_all_gone(&root, &p, &rel.prefix, issued, Duration::from_secs(10)).await;
        figures.push(took);
        for i in issued {
            assert!(
                pg_connect(&p, &i.username, &i.password).await.is_err(),
                "PostgreSQL still accepts revoked credentials"
            );
        }
    }
    let ms: Vec<u128> = figures.iter().map(|d| d.as_millis()).collect();
    println!("time from DELETE to everything revoked (2 entries per pod): {ms:?} ms");
    for f in &figures {
        assert!(
            *f < Duration::from_secs(2),
            "revocation took {f:?} (> 2 s): {ms:?}"
        );
    }
    let m = &vdbi.running.metrics;
    assert_eq!(m.count("vdbi_pod_cleanup_count_success", &[]), 3.0);
    // Counted per namespace, so the count outlives the entries' own series (scrapeable).
    let deleted = format!(
        "vdbi_delete_data_count_success{{namespace=\"{}\",uuid=\"\"}} 6",
        ns.name
    );
    assert!(m.render().contains(&deleted), "no {deleted}");
    assert_eq!(
        m.observations("vdbi_revocation_latency_seconds", &[("path", "watch")])
            .0,
        6
    );
    wh.delete().await;
    vdbi.running.shutdown().await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// The revoker is stopped while pods are deleted: at restart, its sweep cleans everything, and
/// only that (a live pod's credentials stay).
#[actix_rt::test]
async fn stopped_revoker_sweeps_up_after_restart() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-stopped").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let mut gone = Vec::new();
    for n in 0..4 {
        let i = issue(&root, &p, "app-rw", "768h").await;
        let name = format!("doomed-{n}");
        record(&root, &p, &rel.prefix, &i, &ns.name, &name).await;
        create_pod(&pods, &labelled_pod(&name, &rel.label, &[&i.uuid])).await;
        gone.push(i);
    }
    let keep = issue(&root, &p, "app-ro", "768h").await;
    record(&root, &p, &rel.prefix, &keep, &ns.name, "survivor").await;
    create_pod(&pods, &labelled_pod("survivor", &rel.label, &[&keep.uuid])).await;

    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = Duration::from_secs(4);
    let inst = start_instance(&p, &rel, cfg.clone()).await;
    inst.wait_leading(REVOKER_LEASE).await;
    inst.running.shutdown().await;

    for n in 0..4 {
        pods.delete(&format!("doomed-{n}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    // The scenario: deletions while no revoker runs; a second in which nothing may happen.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in &gone {
        assert!(
            all_alive(&root, &p, &rel.prefix, i).await,
            "nothing may be revoked while the revoker is stopped"
        );
    }

    let t0 = Instant::now();
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    let took =
        t0.elapsed() + wait_all_gone(&root, &p, &rel.prefix, &gone, Duration::from_secs(30)).await;
    println!(
        "restart to sweep completion: {:.1} s (unseen grace 4 s)",
        took.as_secs_f64()
    );
    assert!(
        all_alive(&root, &p, &rel.prefix, &keep).await,
        "a live pod lost its credentials"
    );
    assert_eq!(
        inst.running
            .metrics
            .observations("vdbi_revocation_latency_seconds", &[("path", "sweep")])
            .0,
        4
    );
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[keep]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// An entry whose pod never appeared (admission answered, pod never stored) is revoked after the
/// unseen grace — not before (the pod may be on its way), and not 5 minutes later.
#[actix_rt::test]
async fn entry_of_a_pod_that_never_appeared_is_revoked_after_the_grace() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-never").await;
    let grace = Duration::from_secs(10);
    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = grace;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;

    let i = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &i, &ns.name, "never-stored").await;
    let t0 = Instant::now();
    // The scenario: half the grace passes, the entry must still be alive.
    tokio::time::sleep(grace / 2).await;
    assert!(
        all_alive(&root, &p, &rel.prefix, &i).await,
        "revoked before the grace"
    );
    let took = t0.elapsed()
        + wait_all_gone(
            &root,
            &p,
            &rel.prefix,
            std::slice::from_ref(&i),
            Duration::from_secs(60),
        )
        .await;
    println!(
        "pod never appeared: revoked {:.1} s after the entry was written (grace {grace:?})",
        took.as_secs_f64()
    );
    assert!(took >= grace);
    // Sweep every grace/4: due 1 to 1.25 graces after the write (plus the confirmation).
    assert!(
        took < grace + grace / 4 + Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(pg_connect(&p, &i.username, &i.password).await.is_err());
    inst.running.shutdown().await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// A pod reaching phase Succeeded has its credentials revoked then (revokeTerminatedPods), not
/// when its object is deleted; a running neighbour keeps its own.
#[actix_rt::test]
async fn finished_pod_credentials_are_revoked() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-finished").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let job = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &job, &ns.name, "job").await;
    create_pod(&pods, &labelled_pod("job", &rel.label, &[&job.uuid])).await;
    let web = issue(&root, &p, "app-ro", "768h").await;
    record(&root, &p, &rel.prefix, &web, &ns.name, "web").await;
    create_pod(&pods, &labelled_pod("web", &rel.label, &[&web.uuid])).await;

    let inst = start_instance(
        &p,
        &rel,
        release_config(&p, &rel, Mode::Revoker, "revoker-0"),
    )
    .await;
    inst.wait_leading(REVOKER_LEASE).await;
    // The scenario: a moment in which the running job's entry must stay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(all_alive(&root, &p, &rel.prefix, &job).await);

    let t0 = Instant::now();
    pods.patch_status(
        "job",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    let took = t0.elapsed()
        + wait_all_gone(
            &root,
            &p,
            &rel.prefix,
            std::slice::from_ref(&job),
            Duration::from_secs(10),
        )
        .await;
    println!(
        "phase Succeeded to credentials revoked: {} ms",
        took.as_millis()
    );
    assert!(
        pods.get_opt("job").await.unwrap().is_some(),
        "the pod object still exists"
    );
    assert!(all_alive(&root, &p, &rel.prefix, &web).await);
    assert!(pg_connect(&p, &job.username, &job.password).await.is_err());
    assert_eq!(
        inst.running
            .metrics
            .observations("vdbi_revocation_latency_seconds", &[("path", "finished")])
            .0,
        1
    );
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[web]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// A pod whose label is removed leaves the watched set (the API reports it deleted) but keeps its
/// credentials: it still exists (vault-db-injector revoked them).
#[actix_rt::test]
async fn removing_the_label_does_not_revoke() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-relabel").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let i = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &i, &ns.name, "relabelled").await;
    create_pod(&pods, &labelled_pod("relabelled", &rel.label, &[&i.uuid])).await;
    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = Duration::from_secs(2);
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    wait_indexed(&inst.running, std::slice::from_ref(&i.uuid)).await;
    pods.patch(
        "relabelled",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {rel.label.clone(): null}}})),
    )
    .await
    .unwrap();
    // Watch path and several sweeps (grace 2 s, sweep every 1 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        all_alive(&root, &p, &rel.prefix, &i).await,
        "relabelled pod lost its credentials"
    );
    let report = inst
        .running
        .revoker
        .as_ref()
        .unwrap()
        .send(Sweep)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.revoked, 0, "{report:?}");
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[i]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}
