//! Projected NRI mode: the NRI plugin (a `vdbi` process, `mode: nri`, with the chart's NRI
//! ServiceAccount and Vault role, registered with a runtime-side NRI peer as with containerd)
//! killed (-9) three times while the containers of 40 pods are created. Each fetch logs in as the
//! pod and records that login (its accessor) under a key of its own before reading credentials;
//! the revoker's sweep settles what a killed fetch left. Afterwards every pod holds working
//! credentials, and the only tokens and leases of the role left are those the pods' entries
//! record: within the grace for pods that are gone, within the fetch bound for live ones.

use super::crash_projected::{
    accessor_of, accessors_with_policy, pg_users_of, recorded_accessors, slow_role,
};
use super::*;
use ::nri::runtime_peer::{PluginConnection, RuntimePeer};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use vdbi_testkit::nri_runtime::{
    accept, adjusted, peer_config, reserve, runtime_container, sandbox, webhook_nri_pod,
};

/// A pod as the webhook writes it in NRI mode. It names a scheduler nobody runs, so it stays
/// unscheduled: no kubelet runs it, and no garbage collector deletes it as the pod of a node that
/// does not exist.
fn nri_pod(name: &str, label: &str, role: &str, uuid: &str) -> Pod {
    let mut pod = webhook_nri_pod(name, label, role, uuid);
    pod.spec.as_mut().unwrap().scheduler_name = Some("vdbi-test-nobody".into());
    pod
}

/// What the pods were given: pod name → (user, password), from the plugin's answers.
type Served = Arc<Mutex<BTreeMap<String, (String, String)>>>;

/// Creates the app container of every pod not served yet, 8 at a time, until the connection
/// ends or all are served (a refused creation is retried, as the kubelet does).
fn drive(
    conn: Arc<PluginConnection>,
    pods: Arc<Vec<Pod>>,
    served: Served,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let pending: Vec<Pod> = {
                let s = served.lock().unwrap();
                pods.iter()
                    .filter(|p| !s.contains_key(p.metadata.name.as_deref().unwrap()))
                    .cloned()
                    .collect()
            };
            if pending.is_empty() {
                return;
            }
            let conn2 = conn.clone();
            let answers: Vec<(String, Option<BTreeMap<String, String>>)> =
                futures::stream::iter(pending)
                    .map(|pod| {
                        let conn = conn2.clone();
                        async move {
                            let r = conn
                                .create_container(&sandbox(&pod), &runtime_container(&pod, "app"))
                                .await;
                            (
                                pod.metadata.name.clone().unwrap(),
                                r.ok().map(|a| adjusted(&a)),
                            )
                        }
                    })
                    .buffer_unordered(8)
                    .collect()
                    .await;
            {
                let mut s = served.lock().unwrap();
                for (name, set) in answers {
                    if let Some(set) = set.filter(|s| s.contains_key("DB_USER")) {
                        s.insert(name, (set["DB_USER"].clone(), set["DB_PASSWORD"].clone()));
                    }
                }
            }
            if tokio::time::timeout(Duration::from_millis(200), conn.closed())
                .await
                .is_ok()
            {
                return;
            }
        }
    })
}

/// The plugin is killed (-9) three times while containers are created: once as soon as a lease
/// exists that no entry records (a fetch between its credentials and its entry), once as soon as
/// an attempt record shows, once at a random instant; each kill after a SIGSTOP, so that what it
/// had recorded can be counted. A fresh plugin then serves the rest. Half the pods are deleted:
/// within two `revokerUnseenGrace` of that, nothing of theirs is left; within the fetch bound
/// (60 s) plus two sweeps of the last kill, the live pods' stale attempts are settled. Then the
/// tokens of the role are exactly the live entries' (plus logins whose answer the plugin never
/// recorded, which hold no lease), the leases exactly theirs, and every live pod's credentials
/// work.
#[actix_rt::test]
async fn projected_nri_plugin_killed_mid_fetch_leaks_nothing() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-nri").await;
    ns.service_account("app").await;
    let pods_api: Api<Pod> = ns.api();
    let role = unique_name("n");
    let mount = p.var("VDBI_DB_MOUNT");
    // Credentials take a while to create: the kills land while leases are being created.
    slow_role(&root, &p, &role, &ns.name).await;
    let env = ProcEnv::new(&p, &rel).await;
    let grace = Duration::from_secs(10);
    let revoker = env.spawn(
        &p,
        &rel,
        "revoker-0",
        "revoker",
        &format!("revokerUnseenGrace: {}s\n", grace.as_secs()),
        None,
    );
    until(&env, "revoker leads", Duration::from_secs(40), || async {
        revoker.leads(REVOKER_LEASE).await && revoker.index_synced().await
    })
    .await;

    // ---- the pods, as the webhook admitted them (placeholders, reservation) ----
    let mut pods = Vec::new();
    for i in 0..40 {
        let uuid = uuid::Uuid::new_v4().to_string();
        let name = format!("app-{i}");
        reserve(&root, &p, &rel.prefix, &uuid, &ns.name, &name).await;
        pods.push(create_pod(&pods_api, &nri_pod(&name, &rel.label, &role, &uuid)).await);
    }
    let pods = Arc::new(pods);
    let uuid_of =
        |pod: &Pod| pod.metadata.annotations.as_ref().unwrap()[&format!("{PREFIX}uuid")].clone();

    // ---- the plugin, killed three times while it creates credentials ----
    let peer = RuntimePeer::bind(peer_config(env.dir.path())).unwrap();
    let role_nri = rel.leases.vault_role(Component::Nri);
    let plugin_extra = format!(
        "useProjectedSA: true\ntokenRequestAudiences: [vault]\nkubeRole: {role_nri}\n\
         kubeRoleNri: {role_nri}\nnri:\n  enabled: true\n  socketPath: {}\n  cachePath: {}\n  \
         podLabel: {}\n  prewarmer:\n    enabled: false\n",
        env.dir.path().join("nri/nri.sock").display(),
        env.dir.path().join("cache/cache.json").display(),
        rel.label,
    );
    let attempts = format!("{}-attempts", rel.prefix);
    let served: Served = Arc::default();
    let mut unrecorded: BTreeSet<String> = BTreeSet::new();
    let mut last_kill = Instant::now();
    let mut attempts_at_kill = 0;
    let started = Instant::now();
    let mut all_served = Instant::now();
    for round in 0..4 {
        // No NODE_NAME: the pods are on no node (the node sweep and the prewarmer are off).
        let mut plugin = env.spawn(
            &p,
            &rel,
            &format!("nri-{round}"),
            "nri",
            &plugin_extra,
            None,
        );
        let conn = Arc::new(accept(&peer).await);
        let driver = drive(conn.clone(), pods.clone(), served.clone());
        match round {
            0 => {
                let caught = freeze_when(&plugin, Duration::from_secs(30), || async {
                    lease_unrecorded(&root, &p, &mount, &role, &rel.prefix).await
                })
                .await;
                assert!(
                    caught,
                    "never a lease no entry records\n{}",
                    plugin.log_tail(20)
                );
            }
            1 => {
                // A record of this plugin's (or, for a plugin that records no attempt, a lease no
                // entry records).
                let before = attempts_at_kill;
                let caught = freeze_when(&plugin, Duration::from_secs(30), || async {
                    kv_keys(&root, &p, &attempts).await.len() > before
                        || lease_unrecorded(&root, &p, &mount, &role, &rel.prefix).await
                })
                .await;
                assert!(caught, "never an attempt record\n{}", plugin.log_tail(20));
            }
            2 => {
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1500)).await;
                plugin.signal(libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => {
                tokio::time::timeout(Duration::from_secs(90), driver)
                    .await
                    .expect("the last plugin serves every pod within 90 s")
                    .unwrap();
                assert_eq!(
                    served.lock().unwrap().len(),
                    pods.len(),
                    "{}",
                    plugin.log_tail(30)
                );
                drop(plugin);
                all_served = Instant::now();
                break;
            }
        }
        let tokens = accessors_with_policy(&root, &role).await;
        let recorded = recorded_accessors(&root, &p, &rel.prefix).await;
        let lost: BTreeSet<String> = tokens.difference(&recorded).cloned().collect();
        let served_n = served.lock().unwrap().len();
        let entries_n = kv_keys(&root, &p, &rel.prefix).await.len();
        let attempts_n = kv_keys(&root, &p, &attempts).await.len();
        attempts_at_kill = attempts_n;
        let leases_n = leases(&root, &mount, &role).await.len();
        let recorded_n = tokens.intersection(&recorded).count();
        println!(
            "kill {round}: {served_n} pods served, {entries_n} entries, {attempts_n} attempt records, \
             {leases_n} leases, {} tokens of the role ({recorded_n} recorded, {} from logins never \
             recorded)",
            tokens.len(),
            lost.len(),
        );
        unrecorded.extend(lost);
        plugin.kill();
        last_kill = Instant::now();
        conn.close();
        let _ = tokio::time::timeout(Duration::from_secs(20), driver).await;
    }

    // ---- half the pods go; the rest live on ----
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    // Every other pod: both halves had fetches under way at the kills.
    let gone: Vec<Pod> = pods.iter().step_by(2).cloned().collect();
    let live: Vec<Pod> = pods.iter().skip(1).step_by(2).cloned().collect();
    for pod in &gone {
        pods_api
            .delete(pod.metadata.name.as_deref().unwrap(), &dp)
            .await
            .unwrap();
    }
    let deleted = Instant::now();
    let gone_records = {
        let gone_uuids: BTreeSet<String> = gone.iter().map(uuid_of).collect();
        kv_keys(&root, &p, &attempts)
            .await
            .iter()
            .filter(|k| vdbi::bookkeeping::attempt_uuid(k).is_some_and(|u| gone_uuids.contains(u)))
            .count()
    };
    let live_uuids: BTreeSet<String> = live.iter().map(uuid_of).collect();
    let gone_uuids: BTreeSet<String> = gone.iter().map(uuid_of).collect();
    let attempt_uuid = |k: &String| vdbi::bookkeeping::attempt_uuid(k).unwrap_or(k).to_string();

    // The gone pods: entries, reservations and attempt records within two graces.
    let limit = 2 * grace;
    until(
        &env,
        "nothing of the gone pods left",
        limit + Duration::from_secs(5),
        || async {
            let entries = kv_keys(&root, &p, &rel.prefix).await;
            let reservations = kv_keys(&root, &p, &format!("{}-reservations", rel.prefix)).await;
            let records = kv_keys(&root, &p, &attempts).await;
            !entries
                .iter()
                .chain(&reservations)
                .any(|k| gone_uuids.contains(k))
                && !records
                    .iter()
                    .any(|k| gone_uuids.contains(&attempt_uuid(k)))
        },
    )
    .await;
    let gone_took = deleted.elapsed();
    let live_stale = kv_keys(&root, &p, &attempts)
        .await
        .iter()
        .filter(|k| live_uuids.contains(&attempt_uuid(k)))
        .count();

    // The live pods: stale attempts settled within the fetch bound (counted from the last
    // records' writing, at the latest when every pod was served) plus a grace, and not before
    // the fetch bound: none of them may go before 55 s after the first was written.
    let settle_limit = vdbi::schedule::FETCH_ATTEMPT_MAX_AGE + grace;
    let mut first_live_settled = None;
    let mut seen = Vec::new();
    let expected: BTreeSet<String> = loop {
        let entries = kv_keys(&root, &p, &rel.prefix).await;
        let records = kv_keys(&root, &p, &attempts).await;
        let live_records = records
            .iter()
            .filter(|k| live_uuids.contains(&attempt_uuid(k)))
            .count();
        if live_records < live_stale && first_live_settled.is_none() {
            first_live_settled = Some(started.elapsed());
        }
        let reservations = kv_keys(&root, &p, &format!("{}-reservations", rel.prefix)).await;
        let mut entry_accessors = BTreeSet::new();
        for uuid in &entries {
            let e = kv_entry(&root, &p, &rel.prefix, uuid)
                .await
                .unwrap_or_default();
            if let Some(a) = accessor_of(&root, e["TokenId"].as_str().unwrap_or_default()).await {
                entry_accessors.insert(a);
            }
        }
        let tokens: BTreeSet<String> = accessors_with_policy(&root, &role)
            .await
            .into_iter()
            .filter(|a| !unrecorded.contains(a))
            .collect();
        let clean = records.is_empty()
            && reservations.is_empty()
            && entries.iter().cloned().collect::<BTreeSet<_>>() == live_uuids
            && tokens == entry_accessors;
        if clean {
            break entry_accessors;
        }
        seen.push((
            last_kill.elapsed().as_secs(),
            entries.len(),
            records.len(),
            reservations.len(),
            tokens.len(),
            entry_accessors.len(),
        ));
        assert!(
            all_served.elapsed() < settle_limit,
            "(s after the last kill, entries, attempt records, reservations, tokens, entry tokens): {seen:?}\n{}",
            revoker.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settled_took = last_kill.elapsed();
    let first_live_settled = first_live_settled.unwrap_or_else(|| started.elapsed());
    assert!(
        first_live_settled >= Duration::from_secs(55),
        "a live pod's attempt record was settled {first_live_settled:?} after the first fetch \
         began: before any fetch could be known to have ended"
    );
    assert_eq!(expected.len(), live.len(), "one token per live pod");

    // Every live pod's credentials work: its entry's token and lease, its database login.
    let served = served.lock().unwrap().clone();
    let mut live_leases = BTreeSet::new();
    for pod in &live {
        let e = kv_entry(&root, &p, &rel.prefix, &uuid_of(pod))
            .await
            .unwrap();
        let lease = e["LeaseId"].as_str().unwrap().to_string();
        assert!(
            lease_info(&root, &lease).await.is_some(),
            "a live pod's lease is gone"
        );
        assert!(token_usable(&root, e["TokenId"].as_str().unwrap()).await);
        let (user, password) = &served[pod.metadata.name.as_deref().unwrap()];
        assert!(
            pg_connect(&p, user, password).await.is_ok(),
            "a live pod's database login fails"
        );
        live_leases.insert(lease);
    }
    // Leases: the live entries' ones, and those Vault itself lost (they keep their user).
    let mut leases_left: Vec<String> = Vec::new();
    let mut users_left: Vec<String> = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        leases_left = leases(&root, &mount, &role)
            .await
            .into_iter()
            .filter(|l| !live_leases.iter().any(|x| x.ends_with(l.as_str())))
            .collect();
        users_left = pg_users_of(&p, &role)
            .await
            .into_iter()
            .filter(|u| !served.values().any(|(s, _)| s == u))
            .collect();
        if leases_left.len() <= users_left.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Logins whose answer the plugin never recorded (killed between the login and its record)
    // read no credentials: revoking them (root) must end no lease.
    for a in &unrecorded {
        root.request(
            Method::POST,
            "auth/token/revoke-accessor",
            Some(&json!({ "accessor": a })),
        )
        .await;
    }
    let lease_count = |l: Vec<String>| {
        l.into_iter()
            .filter(|l| !live_leases.iter().any(|x| x.ends_with(l.as_str())))
            .collect::<Vec<_>>()
    };
    let t = Instant::now();
    let mut leases_after = leases_left.clone();
    while leases_after == leases_left && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        leases_after = lease_count(leases(&root, &mount, &role).await);
    }
    assert_eq!(
        leases_left, leases_after,
        "leases held by tokens the plugin never recorded"
    );
    assert!(unrecorded.len() <= 3 * 8, "{unrecorded:?}");
    let revoked_by_the_sweep = revoker
        .metric("vdbi_reservation_tokens_revoked_total")
        .await
        .unwrap_or(0.0);
    println!(
        "projected NRI plugin, 3 kills -9 while creating 40 pods' containers: gone pods clean {:.1} s after \
         their deletion (bound {limit:?}); live pods' stale attempts settled {:.1} s after the last kill \
         (bound {settle_limit:?} after every pod was served; {live_stale} record(s) of live pods, the first settled \
         {:.1} s after the first fetch began; {gone_records} of gone pods); {revoked_by_the_sweep} token(s) \
         revoked through an attempt's accessor; \
         {} login(s) whose answer the plugin never recorded; {} lease(s) Vault itself lost",
        gone_took.as_secs_f64(),
        settled_took.as_secs_f64(),
        first_live_settled.as_secs_f64(),
        unrecorded.len(),
        leases_left.len(),
    );
    assert!(
        revoked_by_the_sweep >= 1.0 && live_stale >= 1 && gone_records >= 1,
        "no kill left an attempt of a gone and of a live pod for the sweep ({revoked_by_the_sweep} revoked, \
         {gone_records} of gone pods, {live_stale} of live pods): the test did not exercise the path"
    );
    assert_eq!(
        users_left.len(),
        leases_left.len(),
        "{users_left:?} vs {leases_left:?}"
    );
    assert!(leases_left.len() <= 3 * 8, "{leases_left:?}");

    for pod in &live {
        let _ = pods_api
            .delete(pod.metadata.name.as_deref().unwrap(), &dp)
            .await;
    }
    until(
        &env,
        "the live pods' entries revoked",
        Duration::from_secs(60),
        || async { kv_keys(&root, &p, &rel.prefix).await.is_empty() },
    )
    .await;
    drop(revoker);
    drop_role(&root, &p, &role).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}
