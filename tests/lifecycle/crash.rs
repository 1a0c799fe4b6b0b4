//! Real processes killed or cut off mid-work leak nothing: the revoker mid-revocation, a replica
//! with a broken watch, the injector during an admission burst.

use super::*;

/// The revoker is killed (-9) twice in the middle of revoking many pods' credentials; after a
/// restart nothing is leaked: every lease and token revoked, every entry gone, metadata included.
#[actix_rt::test]
async fn revoker_killed_mid_revocation_leaks_nothing() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-kill").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let mut issued = Vec::new();
    for n in 0..40 {
        let i = issue(
            &root,
            &p,
            if n % 2 == 0 { "app-rw" } else { "app-ro" },
            "768h",
        )
        .await;
        let name = format!("pod-{n}");
        record(&root, &p, &rel.prefix, &i, &ns.name, &name).await;
        create_pod(&pods, &labelled_pod(&name, &rel.label, &[&i.uuid])).await;
        issued.push(i);
    }
    let env = ProcEnv::new(&p, &rel).await;
    // The revoker policy of the documented split (projected) setup: it may revoke leases, which
    // is what ends a lease whose token was left half revoked by the kill (vault-db-injector's
    // single legacy policy may not: such a lease then lives until its TTL, entry kept).
    let extra = "revokerUnseenGrace: 4s\n";
    let mut r = env.spawn(&p, &rel, "revoker-0", "revoker", extra, None);
    until(&env, "revoker leads", Duration::from_secs(40), || async {
        r.leads(REVOKER_LEASE).await && r.index_synced().await
    })
    .await;
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    // Kill as soon as the first entry is gone.
    let total = issued.len();
    until(
        &env,
        "revocations start",
        Duration::from_secs(10),
        || async { kv_keys(&root, &p, &rel.prefix).await.len() < total },
    )
    .await;
    r.kill();
    // Restart and kill again as soon as the restarted revoker makes progress.
    let before = kv_keys(&root, &p, &rel.prefix).await.len();
    drop(r);
    let mut r = env.spawn(&p, &rel, "revoker-0", "revoker", extra, None);
    until(
        &env,
        "revocations resume",
        Duration::from_secs(40),
        || async { kv_keys(&root, &p, &rel.prefix).await.len() < before },
    )
    .await;
    r.kill();
    let left = kv_keys(&root, &p, &rel.prefix).await.len();
    let mut torn = 0;
    for i in &issued {
        if kv_entry(&root, &p, &rel.prefix, &i.uuid).await.is_some()
            && !token_usable(&root, &i.token).await
        {
            torn += 1;
        }
    }
    println!("killed with {left}/{total} entries left ({torn} with the token already revoked)");
    drop(r);
    // Restart (same pod name, as a restarted container): the sweep finishes the job.
    let r = env.spawn(&p, &rel, "revoker-0", "revoker", extra, None);
    let took = wait_all_gone_or(
        &root,
        &p,
        &rel.prefix,
        &issued,
        Duration::from_secs(60),
        || r.log_tail(30),
    )
    .await;
    let log = std::fs::read_to_string(&r.log).unwrap_or_default();
    println!(
        "after restart, everything revoked in {:.1} s ({} token(s) still valid after revoke-orphan, \
         revoked with themselves; {} lease(s) outliving their token)",
        took.as_secs_f64(),
        log.matches("token still valid after revoke-orphan").count(),
        log.matches("lease still held after its token").count(),
    );
    // Not even metadata is left (a kill between an entry's two deletions leaves it alone).
    until(
        &env,
        "no metadata-only entry left",
        Duration::from_secs(30),
        || async { kv_keys(&root, &p, &rel.prefix).await.is_empty() },
    )
    .await;
    for i in issued.iter().take(3) {
        assert!(pg_connect(&p, &i.username, &i.password).await.is_err());
    }
    drop(r);
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// Writes a kubeconfig authenticating as `namespace/sa` with a TokenRequest token.
async fn service_account_kubeconfig(
    p: &Platform,
    client: &kube::Client,
    namespace: &str,
    sa: &str,
    dir: &Path,
) -> PathBuf {
    let token = vdbi_testkit::platform::service_account_token(client, namespace, sa, &[]).await;
    let path = dir.join(format!("{sa}.kubeconfig"));
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
         current-context: x\n",
        p.var("VDBI_KUBE_SERVER"),
        p.var("VDBI_KUBE_CA_FILE"),
    );
    std::fs::write(&path, cfg).unwrap();
    path
}

/// A replica whose pod watch cannot work (no RBAC on pods) gives up the renewer and revoker
/// leases: a healthy peer leads, the blind one stays standby and unready.
#[actix_rt::test]
async fn replica_with_a_broken_watch_steps_down() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let lease_ns = rel.leases.namespace.name.clone();
    // A ServiceAccount that may use Leases in the lease namespace, and nothing else.
    rel.leases.namespace.service_account("blind").await;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("leases".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            verbs: vec!["get", "list", "watch", "create", "update", "patch"]
                .into_iter()
                .map(String::from)
                .collect(),
            ..Default::default()
        }]),
    };
    let roles: Api<Role> = rel.leases.namespace.api();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("leases".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "leases".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "blind".into(),
            namespace: Some(lease_ns.clone()),
            ..Default::default()
        }]),
    };
    let bindings: Api<RoleBinding> = rel.leases.namespace.api();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let env = ProcEnv::new(&p, &rel).await;
    let kubeconfig =
        service_account_kubeconfig(&p, &client, &lease_ns, "blind", env.dir.path()).await;
    let extra = "podWatchBrokenAfter: 3s\n";
    let blind = env.spawn(&p, &rel, "blind", "all", extra, Some(&kubeconfig));
    let both = [REVOKER_LEASE, RENEWER_LEASE];
    // Alone, it takes the leases, then gives them up once its watch is declared broken.
    for lease in both {
        until(
            &env,
            &format!("the blind replica acquires {lease}"),
            Duration::from_secs(30),
            || async { blind.leads(lease).await },
        )
        .await;
    }
    for lease in both {
        until(
            &env,
            &format!("the blind replica steps down from {lease}"),
            Duration::from_secs(30),
            || async { !blind.leads(lease).await },
        )
        .await;
    }
    let (status, body) = blind.readyz().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["pod-index"]["status"], "unhealthy", "{body}");
    let healthy = env.spawn(&p, &rel, "healthy", "all", extra, None);
    for lease in both {
        until(
            &env,
            &format!("the healthy replica leads {lease}"),
            Duration::from_secs(30),
            || async { healthy.leads(lease).await },
        )
        .await;
    }
    // The blind one campaigns again after its pause but never gets a lease back.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        for lease in both {
            assert!(
                healthy.leads(lease).await,
                "the healthy replica lost {lease}:\n{}",
                env.log_tails()
            );
            assert!(!blind.leads(lease).await, "the blind replica leads {lease}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for lease in both {
        let attempts = blind
            .metric(&format!(
                "vdbi_leader_election_attempts_total{{lease_name=\"{lease}\"}}"
            ))
            .await
            .unwrap();
        assert!(attempts >= 2.0, "{lease}: {attempts} campaigns");
        assert!(
            blind.leader_check(lease).await.contains("standby"),
            "{}",
            blind.leader_check(lease).await
        );
    }
    drop(blind);
    drop(healthy);
    let _ = bindings.delete("leases", &DeleteParams::default()).await;
    let _ = roles.delete("leases", &DeleteParams::default()).await;
    rel.leases.cleanup().await;
}

/// The injector is killed (-9) three times during an 8-worker admission burst (legacy mode):
/// once as soon as a bookkeeping entry appears, then at random instants. Whatever it had
/// created — provisional orphan tokens not yet recorded, their leases, entries of pods that
/// were never stored — is gone within two `revokerUnseenGrace` of the last kill: KV keys
/// (metadata included), tokens and their leases of the test's DB role all at zero (a lease
/// Vault itself lost track of, when the kill cut the request that created it, is counted apart;
/// drop_role revokes it).
#[actix_rt::test]
async fn injector_killed_during_an_admission_burst_leaks_nothing() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-burst").await;
    let role = unique_name("burst");
    own_role(&root, &p, &role, &ns.name, false).await;
    let env = ProcEnv::new(&p, &rel).await;
    let grace = Duration::from_secs(10);
    let revoker_extra = format!("revokerUnseenGrace: {}s\n", grace.as_secs());
    let revoker = env.spawn(&p, &rel, "revoker-0", "revoker", &revoker_extra, None);
    until(&env, "revoker leads", Duration::from_secs(40), || async {
        revoker.leads(REVOKER_LEASE).await && revoker.index_synced().await
    })
    .await;
    let port = free_port();
    let injector_extra = format!("webhookListen: 127.0.0.1:{port}\n");
    let hook = ReviewClient::new(&format!("https://127.0.0.1:{port}/mutate"), &env.cert.pem);
    let burst = Burst::start(&hook, &ns.name, &role, 8);
    let mut last_kill = Instant::now();
    for round in 0..3 {
        let mut injector = env.spawn(
            &p,
            &rel,
            &format!("injector-{round}"),
            "injector",
            &injector_extra,
            None,
        );
        until(&env, "injector ready", Duration::from_secs(40), || async {
            injector.readyz().await.is_some_and(|(s, _)| s == 200)
        })
        .await;
        if round == 0 {
            // As soon as an entry shows: issuances are in every state.
            until(&env, "a first entry", Duration::from_secs(20), || async {
                !kv_keys(&root, &p, &rel.prefix).await.is_empty()
            })
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1500)).await;
        }
        injector.kill();
        last_kill = Instant::now();
        println!(
            "kill {round}: {} KV keys, {} leases, {} tokens of the role",
            kv_keys(&root, &p, &rel.prefix).await.len(),
            leases(&root, &p.var("VDBI_DB_MOUNT"), &role).await.len(),
            tokens_with_policy(&root, &role).await
        );
    }
    let admitted = burst.stop().await;
    // KV keys (metadata included) and tokens must all go. A lease can outlive every token of the
    // role only if Vault itself lost it: a request cut by the kill while Vault registered the
    // lease ("failed to register lease ... context canceled" in its log) leaves the lease without
    // its token index. Those are counted apart (only orphan-lease discovery or the role's TTL
    // end them) and must stay rare: at most one per worker and kill.
    let limit = 2 * grace;
    let mut seen = Vec::new();
    let lease_mount = p.var("VDBI_DB_MOUNT");
    let vault_orphans = loop {
        let left = (
            kv_keys(&root, &p, &rel.prefix).await.len(),
            leases(&root, &lease_mount, &role).await,
            tokens_with_policy(&root, &role).await,
        );
        if left.0 == 0 && left.2 == 0 {
            // Tokens gone: Vault revokes a token's leases with it, in the background; wait
            // (bounded) for that, then what is left is what Vault lost track of.
            let settled = Instant::now();
            let mut left_leases = left.1;
            while !left_leases.is_empty() && settled.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                left_leases = leases(&root, &lease_mount, &role).await;
            }
            break left_leases;
        }
        seen.push((last_kill.elapsed().as_secs(), left.0, left.1.len(), left.2));
        assert!(
            last_kill.elapsed() < limit + Duration::from_secs(30),
            "(s after the last kill, kv keys, leases, tokens): {seen:?}\n{}",
            revoker.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let since_kill = last_kill.elapsed();
    println!(
        "3 kills -9 during an 8-worker burst ({} admitted): clean {:.1} s after the last kill (bound 2 x revokerUnseenGrace = {limit:?}); {} lease(s) Vault lost track of",
        admitted,
        since_kill.as_secs_f64(),
        vault_orphans.len()
    );
    assert!(
        since_kill <= limit + Duration::from_secs(1),
        "{since_kill:?} > {limit:?}: {seen:?}"
    );
    assert!(vault_orphans.len() <= 3 * 8, "{vault_orphans:?}");
    drop(revoker);
    drop_role(&root, &p, &role).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}
