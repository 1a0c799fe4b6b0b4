//! Projected mode: the injector killed (-9) during an admission burst. The pod tokens it logged
//! in with, their leases, PostgreSQL roles, entries and reservations are all gone after the
//! revoker's sweep, while a live pod of the same ServiceAccount (and the application's own
//! login with it) keeps working throughout.

use super::*;
use std::collections::BTreeSet;

/// The pod the webhook's answer describes (its JSONPatch applied to `pod`).
fn patched(pod: &Pod, answer: &Value) -> Pod {
    let ops: json_patch::Patch = match &answer["patch"] {
        // the JSONPatch itself, or its bytes (base64 in the JSON of an AdmissionReview)
        Value::Array(items) if items.iter().all(Value::is_number) => {
            let bytes: Vec<u8> = serde_json::from_value(answer["patch"].clone()).unwrap();
            serde_json::from_slice(&bytes).expect("a JSONPatch")
        }
        Value::String(_) => {
            let bytes: k8s_openapi::ByteString =
                serde_json::from_value(answer["patch"].clone()).expect("a base64 patch");
            serde_json::from_slice(&bytes.0).expect("a JSONPatch")
        }
        other => serde_json::from_value(other.clone()).expect("a JSONPatch"),
    };
    let mut doc = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut doc, &ops.0).expect("the patch applies");
    serde_json::from_value(doc).unwrap()
}

/// Accessors of the live tokens holding `policy` (root: accessor list and `lookup-accessor`).
pub(super) async fn accessors_with_policy(root: &VaultRoot, policy: &str) -> BTreeSet<String> {
    use futures::StreamExt;
    let list = root
        .request(
            Method::from_bytes(b"LIST").unwrap(),
            "auth/token/accessors",
            None,
        )
        .await
        .ok("accessor list");
    let all: Vec<String> = list["data"]["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    futures::stream::iter(all)
        .map(|acc| async move {
            let r = root
                .request(
                    Method::POST,
                    "auth/token/lookup-accessor",
                    Some(&json!({ "accessor": acc })),
                )
                .await;
            let has = r.status == 200
                && r.body["data"]["policies"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|x| x == policy));
            has.then_some(acc)
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// The accessor of `token` (root `auth/token/lookup`), `None` once it is revoked.
pub(super) async fn accessor_of(root: &VaultRoot, token: &str) -> Option<String> {
    token_info(root, token)
        .await
        .and_then(|d| d["accessor"].as_str().map(str::to_string))
}

/// What vdbi has recorded at an instant: the accessors named by reservations, NRI fetch attempts
/// and entries.
pub(super) async fn recorded_accessors(
    root: &VaultRoot,
    p: &Platform,
    prefix: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for folder in [
        format!("{prefix}-reservations"),
        format!("{prefix}-attempts"),
    ] {
        for key in kv_keys(root, p, &folder).await {
            if let Some(e) = kv_entry(root, p, &folder, &key).await {
                if let Some(a) = e["TokenAccessor"].as_str().filter(|a| !a.is_empty()) {
                    out.insert(a.to_string());
                }
            }
        }
    }
    for key in kv_keys(root, p, prefix).await {
        if let Some(e) = kv_entry(root, p, prefix, &key).await {
            if let Some(t) = e["TokenId"].as_str().filter(|t| !t.is_empty()) {
                out.extend(accessor_of(root, t).await);
            }
        }
    }
    out
}

/// PostgreSQL users Vault created for `role` (`v-<display name>-<role>-…`, both cut to 8).
pub(super) async fn pg_users_of(p: &Platform, role: &str) -> Vec<String> {
    let admin = pg_connect(
        p,
        &p.var("VDBI_PG_ADMIN_USER"),
        &p.var("VDBI_PG_ADMIN_PASSWORD"),
    )
    .await
    .expect("admin connection");
    let pattern = format!("v-%-{}-%", &role[..8.min(role.len())]);
    admin
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// The live pod's credentials: its entry's token and lease, its database login.
struct LivePod {
    token: String,
    lease: String,
    user: String,
    password: String,
    /// The application's own login with the same ServiceAccount and role (not vdbi's).
    app_token: String,
}

impl LivePod {
    /// Everything still works: both tokens authenticate, the lease is held, the user logs in.
    async fn assert_working(&self, root: &VaultRoot, p: &Platform, when: &str) {
        assert!(
            token_usable(root, &self.token).await,
            "{when}: the live pod's token was revoked"
        );
        assert!(
            token_usable(root, &self.app_token).await,
            "{when}: the application's own token (same ServiceAccount) was revoked"
        );
        assert!(
            lease_info(root, &self.lease).await.is_some(),
            "{when}: the live pod's lease was revoked"
        );
        assert!(
            pg_connect(p, &self.user, &self.password).await.is_ok(),
            "{when}: the live pod's database login fails"
        );
    }
}

/// A database role of the test's own (`role`, for `namespace`) whose credentials take 0.2 s to
/// create (`pg_sleep`).
pub(super) async fn slow_role(root: &VaultRoot, p: &Platform, role: &str, namespace: &str) {
    own_role(root, p, role, namespace, false).await;
    let mount = p.var("VDBI_DB_MOUNT");
    root.write(
        &format!("{mount}/roles/{role}"),
        &json!({
            "db_name": role,
            "creation_statements": ["SELECT pg_sleep(0.2); CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT CONNECT ON DATABASE app TO \"{{name}}\";"],
            "revocation_statements": ["REVOKE ALL PRIVILEGES ON DATABASE app FROM \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";"],
            "default_ttl": "1h",
            "max_ttl": "24h"
        }),
    )
    .await;
}

/// A mean latency (s) of one Vault operation of the injector, from its metrics.
async fn mean_latency(proc: &VdbiProcess, operation: &str) -> Option<f64> {
    let labels = format!("{{operation=\"{operation}\",outcome=\"ok\"}}");
    let sum = proc
        .metric(&format!("vdbi_vault_request_duration_seconds_sum{labels}"))
        .await?;
    let count = proc
        .metric(&format!(
            "vdbi_vault_request_duration_seconds_count{labels}"
        ))
        .await?;
    (count > 0.0).then(|| sum / count)
}

/// The projected-mode injector is killed (-9) three times during an 8-worker admission burst:
/// once as soon as a lease exists that no entry records yet (credentials read, entry not
/// written), once as soon as a reservation shows (an issuance between its login and its entry),
/// once at a random instant. Each kill is preceded by a SIGSTOP, so what vdbi had recorded at its
/// death can be counted. Within two `revokerUnseenGrace` of the last kill: no entry, no
/// reservation, no live token vdbi created that it had recorded, no lease, no PostgreSQL user
/// (but those of leases Vault itself lost, counted apart); tokens created by a login whose
/// answer vdbi never recorded (the documented login→reservation window) are counted and shown
/// to hold no lease. A live pod of the same ServiceAccount and the application's own login keep
/// working throughout.
#[actix_rt::test]
async fn projected_injector_killed_during_an_admission_burst_leaks_nothing() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-pburst").await;
    ns.service_account("app").await;
    let pods: Api<Pod> = ns.api();
    let role = unique_name("p");
    // Credentials take a while to create (as on a busy database): the kills land while leases
    // are being created.
    slow_role(&root, &p, &role, &ns.name).await;
    let mount = p.var("VDBI_DB_MOUNT");
    let env = ProcEnv::new(&p, &rel).await;
    let grace = Duration::from_secs(10);
    let revoker_extra = format!("revokerUnseenGrace: {}s\n", grace.as_secs());
    let revoker = env.spawn(&p, &rel, "revoker-0", "revoker", &revoker_extra, None);
    until(&env, "revoker leads", Duration::from_secs(40), || async {
        revoker.leads(REVOKER_LEASE).await && revoker.index_synced().await
    })
    .await;
    let port = free_port();
    let injector_extra = format!(
        "webhookListen: 127.0.0.1:{port}\nuseProjectedSA: true\ntokenRequestAudiences: [vault]\n\
         kubeRole: {}\n",
        rel.leases.vault_role(Component::Injector)
    );
    let hook = ReviewClient::new(&format!("https://127.0.0.1:{port}/mutate"), &env.cert.pem);
    let spawn_injector = |name: String| {
        let env = &env;
        let (p, rel, extra) = (&p, &rel, &injector_extra);
        async move {
            let injector = env.spawn(p, rel, &name, "injector", extra, None);
            until(env, "injector ready", Duration::from_secs(40), || async {
                injector.readyz().await.is_some_and(|(s, _)| s == 200)
            })
            .await;
            injector
        }
    };

    // ---- a live pod of the same ServiceAccount, admitted by vdbi and stored ----
    let mut injector = spawn_injector("injector-0".into()).await;
    let asked = pod(
        "live",
        "app",
        &[
            ("db.role", &role),
            ("db.env-key-dbuser", "U"),
            ("db.env-key-dbpassword", "P"),
        ],
    );
    let answer = hook
        .send(&review(&asked, &ns.name, "live", "live"))
        .await
        .expect("webhook answers");
    assert_eq!(answer["allowed"], true, "{answer}");
    let admitted = patched(&asked, &answer);
    let live_uuid = uuids(&admitted)[0].clone();
    let values = env_map(&admitted, "app");
    let mut stored = labelled_pod("live", &rel.label, &[&live_uuid]);
    stored.spec.as_mut().unwrap().service_account_name = Some("app".into());
    create_pod(&pods, &stored).await;
    let entry = kv_entry(&root, &p, &rel.prefix, &live_uuid)
        .await
        .expect("the live pod's entry");
    let jwt =
        vdbi_testkit::platform::service_account_token(&client, &ns.name, "app", &["vault"]).await;
    let app_login = root
        .request(
            Method::POST,
            &format!("auth/{}/login", p.var("VDBI_K8S_AUTH_MOUNT")),
            Some(&json!({"role": role, "jwt": jwt})),
        )
        .await
        .ok("the application's own login");
    let live = LivePod {
        token: entry["TokenId"].as_str().unwrap().to_string(),
        lease: entry["LeaseId"].as_str().unwrap().to_string(),
        user: values["U"].clone(),
        password: values["P"].clone(),
        app_token: app_login["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    live.assert_working(&root, &p, "before the burst").await;
    let live_accessors: BTreeSet<String> = [
        accessor_of(&root, &live.token).await.unwrap(),
        accessor_of(&root, &live.app_token).await.unwrap(),
    ]
    .into();
    let live_users: BTreeSet<String> = [live.user.clone()].into();
    assert!(
        pg_users_of(&p, &role).await.contains(&live.user),
        "{} is not counted as a user of {role}",
        live.user
    );
    // Its reservation is completed (deleted) right after the entry.
    until(
        &env,
        "the live pod's reservation completed",
        Duration::from_secs(10),
        || async {
            kv_keys(&root, &p, &format!("{}-reservations", rel.prefix))
                .await
                .is_empty()
        },
    )
    .await;

    // ---- the burst ----
    let burst = Burst::start(&hook, &ns.name, &role, 8);
    let reservations = format!("{}-reservations", rel.prefix);
    let mut unrecorded: BTreeSet<String> = BTreeSet::new();
    let mut last_kill = Instant::now();
    let mut windows = Vec::new();
    for round in 0..3 {
        if round > 0 {
            injector = spawn_injector(format!("injector-{round}")).await;
        }
        match round {
            0 => {
                // Frozen at random instants until Vault holds a lease no entry records yet (the
                // window is a few milliseconds long: polling alone misses it on a busy machine).
                let caught = freeze_when(&injector, Duration::from_secs(30), || async {
                    lease_unrecorded(&root, &p, &mount, &role, &rel.prefix).await
                })
                .await;
                assert!(
                    caught,
                    "never a lease no entry records\n{}",
                    env.log_tails()
                );
            }
            1 => {
                until(
                    &env,
                    "a reservation (or, without them, an issuance under way)",
                    Duration::from_secs(20),
                    || async {
                        !kv_keys(&root, &p, &reservations).await.is_empty()
                            || mean_latency(&injector, "LoginKubernetes").await.is_some()
                    },
                )
                .await;
            }
            _ => tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1500)).await,
        }
        // What the unrecorded window is made of, as this injector measured it.
        windows.push((
            mean_latency(&injector, "LoginKubernetes").await,
            mean_latency(&injector, "KvPutReservation").await,
        ));
        // Freeze it, let Vault finish the requests it was serving, count, then kill.
        injector.signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tokens = accessors_with_policy(&root, &role).await;
        let recorded = recorded_accessors(&root, &p, &rel.prefix).await;
        let lost: BTreeSet<String> = tokens
            .difference(&recorded)
            .filter(|a| !live_accessors.contains(*a))
            .cloned()
            .collect();
        println!(
            "kill {round}: {} entries, {} reservations, {} leases, {} tokens of the role ({} recorded by vdbi, {} live, {} from logins vdbi never recorded)",
            kv_keys(&root, &p, &rel.prefix).await.len(),
            kv_keys(&root, &p, &reservations).await.len(),
            leases(&root, &mount, &role).await.len(),
            tokens.len(),
            tokens.intersection(&recorded).count(),
            live_accessors.len(),
            lost.len(),
        );
        unrecorded.extend(lost);
        injector.kill();
        last_kill = Instant::now();
        live.assert_working(&root, &p, &format!("after kill {round}"))
            .await;
    }
    let admitted_n = burst.stop().await;

    // ---- after the sweep: nothing vdbi recorded is left, the live pod keeps working ----
    let limit = 2 * grace;
    let mut seen = Vec::new();
    loop {
        let entries: Vec<String> = kv_keys(&root, &p, &rel.prefix)
            .await
            .into_iter()
            .filter(|k| *k != live_uuid)
            .collect();
        let pending = kv_keys(&root, &p, &reservations).await;
        let tokens: Vec<String> = accessors_with_policy(&root, &role)
            .await
            .into_iter()
            .filter(|a| !live_accessors.contains(a) && !unrecorded.contains(a))
            .collect();
        if entries.is_empty() && pending.is_empty() && tokens.is_empty() {
            break;
        }
        seen.push((
            last_kill.elapsed().as_secs(),
            entries.len(),
            pending.len(),
            tokens.len(),
        ));
        assert!(
            last_kill.elapsed() < limit + Duration::from_secs(30),
            "(s after the last kill, entries, reservations, tokens): {seen:?}\n{}",
            revoker.log_tail(30)
        );
        live.assert_working(&root, &p, "while the sweep cleans")
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = last_kill.elapsed();
    // Vault ends a revoked token's leases in the background: give it up to 10 s to drop every
    // lease whose user is gone. What stays, with its user, is a lease Vault lost track of.
    let (mut leases_left, mut users_left) = (Vec::new(), Vec::new());
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(10) {
        leases_left = leases(&root, &mount, &role)
            .await
            .into_iter()
            .filter(|l| !live.lease.ends_with(l.as_str()))
            .collect();
        users_left = pg_users_of(&p, &role)
            .await
            .into_iter()
            .filter(|u| !live_users.contains(u))
            .collect();
        if leases_left.len() <= users_left.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "leases settled {:.1} s after the clean state",
        settle.elapsed().as_secs_f64()
    );
    live.assert_working(&root, &p, "after the sweep").await;
    // Tokens of logins vdbi never recorded: they never read credentials (that happens only
    // once the reservation is written). Revoking them (root) must not end any lease.
    let still_unrecorded = {
        let now = accessors_with_policy(&root, &role).await;
        unrecorded.intersection(&now).cloned().collect::<Vec<_>>()
    };
    for a in &still_unrecorded {
        root.request(
            Method::POST,
            "auth/token/revoke-accessor",
            Some(&json!({ "accessor": a })),
        )
        .await;
    }
    // Vault ends a revoked token's leases in the background: watch for 3 s.
    let mut leases_after = leases_left.clone();
    let t = Instant::now();
    while leases_after == leases_left && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        leases_after = leases(&root, &mount, &role)
            .await
            .into_iter()
            .filter(|l| !live.lease.ends_with(l.as_str()))
            .collect();
    }
    let revoked_by_the_sweep = revoker
        .metric("vdbi_reservation_tokens_revoked_total")
        .await
        .unwrap_or(0.0);
    println!(
        "projected, 3 kills -9 during an 8-worker burst ({} admitted): clean {:.1} s after the last kill \
         (bound 2 x revokerUnseenGrace = {limit:?}); {revoked_by_the_sweep} token(s) revoked through a \
         reservation's accessor; {} token(s) of logins whose answer vdbi never recorded ({} still \
         live, 0 leases between them); {} lease(s) and {} PostgreSQL user(s) Vault itself lost; \
         mean login / reservation write per kill (s): {windows:?}",
        admitted_n,
        took.as_secs_f64(),
        unrecorded.len(),
        still_unrecorded.len(),
        leases_left.len(),
        users_left.len(),
    );
    assert_eq!(
        leases_left, leases_after,
        "leases held by tokens vdbi never recorded"
    );
    assert!(
        took <= limit + Duration::from_secs(1),
        "{took:?} > {limit:?}: {seen:?}"
    );
    assert!(
        revoked_by_the_sweep >= 1.0,
        "no kill left a reservation for the sweep: the test did not exercise the path"
    );
    // Leases Vault lost track of (a kill during the credentials request) keep their user.
    assert_eq!(
        users_left.len(),
        leases_left.len(),
        "{users_left:?} vs {leases_left:?}"
    );
    assert!(leases_left.len() <= 3 * 8, "{leases_left:?}");
    assert!(unrecorded.len() <= 3 * 8, "{unrecorded:?}");
    live.assert_working(&root, &p, "at the end").await;
    drop(revoker);
    drop(injector);
    let _ = pods.delete("live", &DeleteParams::default()).await;
    drop_role(&root, &p, &role).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}
