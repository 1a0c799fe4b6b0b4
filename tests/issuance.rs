//! Issuance under concurrency and load, against the real platform: concurrent reviews of one
//! pod share one credential set; under a tight rate limit and deadline, refusals say what is
//! true and nothing issued for a refused pod outlives the undo.
//!
//! Reviews are posted straight to vdbi's webhook, as the apiserver does (the apiserver would
//! store at most one of 200 pods of the same name; what matters is what vdbi issues).

use futures::StreamExt;
use serde_json::Value;
use std::time::{Duration, Instant};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace, VaultRoot};
use vdbi_testkit::*;

/// What vdbi left in Vault for a role and a prefix: (KV keys incl. metadata-only, leases,
/// tokens carrying the role's policy).
async fn footprint(
    root: &VaultRoot,
    p: &Platform,
    prefix: &str,
    role: &str,
) -> (usize, usize, usize) {
    (
        kv_keys(root, p, prefix).await.len(),
        leases(root, &p.var("VDBI_DB_MOUNT"), role).await.len(),
        tokens_with_policy(root, role).await,
    )
}

/// Waits until `footprint` equals `want`, up to `limit`; returns the time it took.
async fn settle(
    root: &VaultRoot,
    p: &Platform,
    prefix: &str,
    role: &str,
    want: (usize, usize, usize),
    limit: Duration,
) -> Duration {
    let t = Instant::now();
    loop {
        let got = footprint(root, p, prefix, role).await;
        if got == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "(kv keys, leases, tokens) = {got:?}, expected {want:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// 200 reviews of the same pod (same namespace and name), 100 at a time, under the default
/// Vault rate limit: every review is admitted, reviews that overlap share one issuance, and
/// every credential set issued is recorded (as many KV entries, leases and tokens as distinct
/// answers) — a handful of sets at most, nothing unrecorded.
#[actix_rt::test]
async fn concurrent_reviews_of_one_pod_share_one_credential_set() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "iss-same").await;
    let role = unique_name("same");
    own_role(&root, &p, &role, &ns.name, false).await;
    // The default Vault rate limit (30/s, burst 10), as in production.
    let vdbi = start_vdbi(
        &p,
        Options {
            configure: Box::new(|c| {
                let d = vdbi::config::Config::default();
                (c.vault_rate_limit, c.vault_rate_burst) = (d.vault_rate_limit, d.vault_rate_burst);
            }),
            ..Options::default()
        },
    )
    .await;
    vdbi.wait_ready().await;
    let hook = ReviewClient::new(&vdbi.webhook_url(), &vdbi.cert.pem);

    let pod = pod(
        "web-0",
        "app",
        &[("db.role", &role), ("db.env-key-dbuser", "DB_USER")],
    );
    let answers: Vec<Value> = futures::stream::iter(0..200)
        .map(|i| {
            let (hook, review) = (
                hook.clone(),
                review(&pod, &ns.name, "web-0", &format!("req-{i}")),
            );
            async move { hook.send(&review).await.expect("webhook answers") }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let allowed: Vec<&Value> = answers.iter().filter(|a| a["allowed"] == true).collect();
    assert_eq!(
        allowed.len(),
        200,
        "every review allowed; a refusal: {:?}",
        answers.iter().find(|a| a["allowed"] != true)
    );
    let sets: std::collections::BTreeSet<String> = allowed
        .iter()
        .map(|a| {
            assert!(
                !a["patch"].is_null(),
                "an admitted review carries a patch: {a}"
            );
            a["patch"].to_string()
        })
        .collect();
    let coalesced = vdbi
        .running
        .metrics
        .count("vdbi_admission_coalesced_total", &[]);
    println!(
        "200 reviews of one pod (100 concurrent): {} credential set(s), {coalesced} reviews joined an issuance in flight",
        sets.len()
    );
    assert!(coalesced >= 100.0, "overlapping reviews share one issuance");
    assert!(
        sets.len() <= 3,
        "{} credential sets for one pod",
        sets.len()
    );
    let n = sets.len();
    assert_eq!(footprint(&root, &p, &vdbi.prefix, &role).await, (n, n, n));
    let patch = allowed[0]["patch"].clone();

    // A repeated delivery later (the pod's creation retried) issues a new set: the sweep
    // revokes the one no stored pod references (tests/lifecycle/ covers the sweep).
    let again = hook
        .send(&review(&pod, &ns.name, "web-0", "req-again"))
        .await
        .unwrap();
    assert_eq!(again["allowed"], true);
    assert_ne!(again["patch"], patch);

    purge_prefix(&root, &p, &vdbi.prefix).await;
    drop_role(&root, &p, &role).await;
    vdbi.running.shutdown().await;
    ns.cleanup().await;
}

/// Pods at 20/s through a rate limit too slow for them, with a short admission deadline: most
/// are refused at the deadline while their calls still run. A refusal says "nothing was issued"
/// only when it is true (at most as many such refusals as pods that got no token); once the undo
/// and the revoker's sweep have run (an entry written after its caller gave up), what is left is
/// exactly what the admitted pods hold — no unrecorded lease or token.
#[actix_rt::test]
async fn refused_under_a_rate_limit_leaves_only_what_admitted_pods_hold() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "iss-rate").await;
    let role = unique_name("rate");
    own_role(&root, &p, &role, &ns.name, false).await;
    let (lease_ns, label) = (ns.name.clone(), unique_name("vdbi-iss"));
    let grace = Duration::from_secs(10);
    let vdbi = start_vdbi(
        &p,
        Options {
            mode: vdbi::config::Mode::All,
            // vaultRateLimit no longer paces admissions (only the renewer and revoker), and an
            // admission takes tens of ms: a deadline shorter than one Vault round trip is what
            // makes the burst overrun it, with calls still in flight (late arrivals).
            admission_timeout: Duration::from_millis(5),
            configure: Box::new(move |c| {
                (c.vault_rate_limit, c.vault_rate_burst) = (20, 5);
                c.pod_name = "iss-rate-0".into();
                c.pod_namespace = lease_ns;
                c.injector_label = label;
                c.revoker_unseen_grace = grace;
                c.sync_ttl_second = 3600;
            }),
            ..Options::default()
        },
    )
    .await;
    vdbi.wait_ready().await;
    let hook = ReviewClient::new(&vdbi.webhook_url(), &vdbi.cert.pem);

    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for i in 0..60 {
        tick.tick().await;
        let name = format!("burst-{i}");
        let pod = pod(
            &name,
            "app",
            &[("db.role", &role), ("db.env-key-dbuser", "DB_USER")],
        );
        let (hook, review) = (
            hook.clone(),
            review(&pod, &ns.name, &name, &format!("r-{i}")),
        );
        tasks.push(tokio::spawn(
            async move { hook.send(&review).await.unwrap() },
        ));
    }
    let mut allowed = 0;
    let mut messages = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        if a["allowed"] == true {
            allowed += 1;
        } else {
            messages.push(
                a["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    let tokens_issued = vdbi
        .running
        .metrics
        .count("vdbi_orphan_ticket_created_count_success", &[]) as usize;
    let claims_nothing = messages
        .iter()
        .filter(|m| m.contains("nothing was issued"))
        .count();
    println!(
        "60 pods at 20/s, Vault rate limit 20/s: {allowed} admitted, {} refused ({claims_nothing} saying nothing was issued); {tokens_issued} tokens issued",
        messages.len()
    );
    for m in messages.iter().take(2) {
        println!("  refusal: {m}");
    }
    assert!(!messages.is_empty(), "the burst must overrun the deadline");
    for m in &messages {
        assert!(
            m.contains("being revoked")
                || m.contains("revoked as they complete")
                || m.contains("nothing was issued"),
            "a refusal must say what became of what was issued: {m}"
        );
    }
    assert!(
        claims_nothing <= 60 - tokens_issued.min(60),
        "{claims_nothing} refusals say nothing was issued, but only {} pods got no token",
        60 - tokens_issued.min(60)
    );
    // Once undone, every lease and token left belongs to an admitted pod (a token created by a
    // call that outlived its caller expires with its provisional TTL; an entry written after
    // its caller gave up holds a revoked token: the sweep deletes it).
    let t = Instant::now();
    loop {
        let (_, l, tk) = footprint(&root, &p, &vdbi.prefix, &role).await;
        if l <= allowed && tk <= allowed {
            break;
        }
        assert!(
            t.elapsed() < 2 * grace,
            "(leases, tokens) = {:?}, admitted pods hold ({allowed}, {allowed})",
            (l, tk)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "refused pods' tokens and leases revoked {:.1} s after the burst",
        t.elapsed().as_secs_f64()
    );
    // The pods were never stored: the sweep revokes the rest, entries included, within two
    // graces.
    let took = settle(&root, &p, &vdbi.prefix, &role, (0, 0, 0), 2 * grace).await;
    println!(
        "everything revoked {:.1} s after the burst (revokerUnseenGrace {grace:?})",
        (t.elapsed() + took).as_secs_f64()
    );

    purge_prefix(&root, &p, &vdbi.prefix).await;
    drop_role(&root, &p, &role).await;
    vdbi.running.shutdown().await;
    ns.cleanup().await;
}
