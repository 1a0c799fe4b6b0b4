//! NRI fetches take issuance slots as admissions do: a node pod with many dbConfigs cannot
//! hold up another pod's fetch.

use super::*;

/// One issuance slot for the whole plugin, one per pod: a pod with 8 dbConfigs fetches them one
/// after the other, and a one-dbConfig pod whose container is created meanwhile is served in
/// the next round (round-robin between pods), long before the big pod's last dbConfig: neither
/// all at once (no bound) nor behind all 8 (first come, first served).
#[actix_rt::test]
async fn a_pod_with_many_dbconfigs_cannot_starve_another_pods_fetch() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "nri-fair").await;
    ns.service_account("app").await;
    let (big_role, small_role) = (unique_name("nri-big"), unique_name("nri-small"));
    own_role(&root, &p, &big_role, &ns.name, false).await;
    own_role(&root, &p, &small_role, &ns.name, false).await;
    let prefix = unique_name("t");
    let node = unique_name("node");

    const BIG: usize = 8;
    let dbs: Vec<(String, &str)> = (0..BIG)
        .map(|i| (format!("db{i}"), big_role.as_str()))
        .collect();
    let dbs: Vec<(&str, &str)> = dbs.iter().map(|(d, r)| (d.as_str(), *r)).collect();
    let big_ids: Vec<String> = (0..BIG).map(|_| new_uuid()).collect();
    let big_refs: Vec<&str> = big_ids.iter().map(String::as_str).collect();
    let (big, _) = webhook_like_pod("big", "app", &node, &dbs, &big_refs);
    let small_id = new_uuid();
    let (small, _) = webhook_like_pod("small", "app", &node, &[("db", &small_role)], &[&small_id]);
    let big = create_pod(&ns, &big).await;
    let small = create_pod(&ns, &small).await;
    for id in &big_ids {
        reserve(&root, &p, &prefix, id, &ns.name, "big").await;
    }
    reserve(&root, &p, &prefix, &small_id, &ns.name, "small").await;

    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(peer_config(dir.path())).unwrap();
    let mut o = NriOptions::new(&prefix, &node, dir.path());
    o.prewarm = false; // the fetches start with CreateContainer, in the order the test sends
    o.issuance_slots = Some((1, 1));
    let nri = start_nri(&p, o).await;
    let conn = accept(&peer).await;
    let waiting = || nri.metric(|m| m.value("vdbi_issuance_slots_waiting", &[]).unwrap_or(0.0));

    // The big pod's first dbConfig holds the one slot, its other seven wait.
    let big_call = {
        let (c, sb) = (runtime_container(&big, "app"), sandbox(&big));
        let conn = &conn;
        async move { conn.create_container(&sb, &c).await }
    };
    let small_call = async {
        eventually(
            "the big pod's dbConfigs queue for a slot",
            Duration::from_secs(20),
            || async { waiting() >= 1.0 },
        )
        .await;
        let served = conn
            .create_container(&sandbox(&small), &runtime_container(&small, "app"))
            .await;
        // Read at once: how far the big pod's fetch had gone when the small pod was served.
        let big_leases = leases(&root, "databases", &big_role).await.len();
        (served, big_leases)
    };
    let (big_result, (small_result, big_leases_then)) = futures::join!(big_call, small_call);

    let small_set = adjusted(&small_result.expect("the small pod is served"));
    assert!(!placeholder::contains_marker(&small_set["DB_PASSWORD"]));
    assert!(
        big_leases_then < BIG,
        "the small pod waited for every dbConfig of the big pod ({big_leases_then} of {BIG} issued)"
    );
    // The big pod's fetch completes too (its CreateContainer may have given up at the NRI
    // budget while the fetch went on: the retry is then a cache hit).
    eventually(
        "the big pod's credentials",
        Duration::from_secs(30),
        || async { leases(&root, "databases", &big_role).await.len() == BIG },
    )
    .await;
    let big_set = match big_result {
        Ok(adj) => adjusted(&adj),
        Err(_) => adjusted(
            &conn
                .create_container(&sandbox(&big), &runtime_container(&big, "app"))
                .await
                .expect("the big pod is served from the cache"),
        ),
    };
    for i in 0..BIG {
        assert!(!placeholder::contains_marker(
            &big_set[&format!("DB{i}_PASSWORD")]
        ));
    }
    // Every dbConfig of the big pod but its first waited for its slot, and so did the small one.
    let waits = nri.metric(|m| m.count("vdbi_issuance_slot_waits_total", &[("component", "nri")]));
    eprintln!("big pod: {big_leases_then} of {BIG} issued when the small pod was served; {waits} slot waits");
    assert!(waits >= BIG as f64, "{waits} slot waits");
    assert_eq!(waiting(), 0.0);
    assert_eq!(
        nri.metric(|m| m.value("vdbi_issuance_slots_in_use", &[]).unwrap_or(-1.0)),
        0.0
    );

    conn.close();
    nri.running.shutdown().await;
    force_delete_pods(&ns).await;
    ns.cleanup().await;
    drop_role(&root, &p, &big_role).await;
    drop_role(&root, &p, &small_role).await;
}
