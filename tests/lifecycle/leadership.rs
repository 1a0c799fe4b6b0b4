//! Leader election between real `vdbi` processes: one leader per duty, hand-over on kill,
//! stop and graceful shutdown.

use super::*;

/// Two replicas (each running renewer and revoker): exactly one leads each duty and only it
/// acts; `vdbi_is_leader` and `/readyz` say so; kill -9 of the leader hands over after the lease
/// duration; a replica frozen past the lease duration loses it, notices when thawed, campaigns
/// again and leads again once the new leader stops (SIGTERM releases: immediate hand-over).
#[actix_rt::test]
async fn leader_election_between_real_processes() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-election").await;
    let env = ProcEnv::new(&p, &rel).await;
    let extra = "syncTTLSecond: 2\nrevokerUnseenGrace: 2s\n";
    let a = env.spawn(&p, &rel, "replica-a", "all", extra, None);
    let b = env.spawn(&p, &rel, "replica-b", "all", extra, None);
    for lease in [REVOKER_LEASE, RENEWER_LEASE] {
        until(
            &env,
            &format!("a leader for {lease}"),
            Duration::from_secs(40),
            || async { a.leads(lease).await || b.leads(lease).await },
        )
        .await;
    }
    // The scenario: both replicas keep campaigning a while; a second leader would show now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revoker_leader = sole_leader(&[&a, &b], REVOKER_LEASE).await;
    let renewer_leader = sole_leader(&[&a, &b], RENEWER_LEASE).await;
    println!(
        "leaders: revoker={}, renewer={}",
        revoker_leader.name, renewer_leader.name
    );
    // Exactly one acts: only the renewer leader runs cycles; only the revoker leader revokes.
    for proc in [&a, &b] {
        let cycles = proc
            .metric("vdbi_synchronization_count_success")
            .await
            .unwrap_or(0.0)
            + proc
                .metric("vdbi_synchronization_count_error")
                .await
                .unwrap_or(0.0);
        if std::ptr::eq(proc, renewer_leader) {
            assert!(
                cycles >= 1.0,
                "the renewer leader ran no cycle:\n{}",
                proc.log_tail(30)
            );
        } else {
            assert_eq!(cycles, 0.0, "a standby renewer ran cycles");
        }
        // Only the leader has a last successful cycle: a standby exports none (an alert on its
        // age cannot fire for it).
        let last = proc.metric("vdbi_last_synchronization_success").await;
        if std::ptr::eq(proc, renewer_leader) {
            assert!(last.is_some_and(|t| t > 0.0), "leader: {last:?}");
        } else {
            assert_eq!(
                last, None,
                "a standby exports vdbi_last_synchronization_success"
            );
        }
        let check = proc.leader_check(REVOKER_LEASE).await;
        if std::ptr::eq(proc, revoker_leader) {
            assert!(check.contains("leading"), "{check}");
        } else {
            assert!(check.contains("standby"), "{check}");
        }
    }
    let i = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &i, &ns.name, "never-stored").await;
    wait_all_gone(&root, &p, &rel.prefix, &[i], Duration::from_secs(20)).await;
    let sweep_revocations = "vdbi_revocation_latency_seconds_count{path=\"sweep\"}";
    for proc in [&a, &b] {
        let n = proc.metric(sweep_revocations).await.unwrap_or(0.0);
        let expected = if std::ptr::eq(proc, revoker_leader) {
            1.0
        } else {
            0.0
        };
        assert_eq!(n, expected, "{}: {sweep_revocations}", proc.name);
    }

    // kill -9 the revoker leader: the survivor takes over both duties.
    let (mut dead, survivor) = if std::ptr::eq(revoker_leader, &a) {
        (a, b)
    } else {
        (b, a)
    };
    let t0 = Instant::now();
    dead.kill();
    until(
        &env,
        "hand-over after kill -9",
        Duration::from_secs(30),
        || async { survivor.leads(REVOKER_LEASE).await && survivor.leads(RENEWER_LEASE).await },
    )
    .await;
    let kill_handover = t0.elapsed();
    println!(
        "kill -9 of the leader -> survivor leads: {:.1} s (lease 15 s, retry 2 s)",
        kill_handover.as_secs_f64()
    );
    assert!(kill_handover < Duration::from_secs(15 + 2 + 4));
    drop(dead);

    // A fresh replica; then freeze the leader past the lease duration.
    let c = env.spawn(&p, &rel, "replica-c", "all", extra, None);
    until(&env, "replica-c ready", Duration::from_secs(30), || async {
        c.readyz().await.is_some()
    })
    .await;
    let attempts_before = survivor
        .metric(&format!(
            "vdbi_leader_election_attempts_total{{lease_name=\"{REVOKER_LEASE}\"}}"
        ))
        .await
        .unwrap();
    let t0 = Instant::now();
    survivor.signal(libc::SIGSTOP);
    until(
        &env,
        "hand-over from a frozen leader",
        Duration::from_secs(30),
        || async { c.leads(REVOKER_LEASE).await && c.leads(RENEWER_LEASE).await },
    )
    .await;
    let freeze_handover = t0.elapsed();
    println!(
        "leader frozen (SIGSTOP) -> other replica leads: {:.1} s",
        freeze_handover.as_secs_f64()
    );
    // The scenario: the frozen leader stays frozen a while after losing the lease.
    tokio::time::sleep(Duration::from_secs(2)).await;
    survivor.signal(libc::SIGCONT);
    // Thawed, it notices it lost the lease and stands by (campaigning).
    until(
        &env,
        "thawed replica stands by",
        Duration::from_secs(10),
        || async {
            !survivor.leads(REVOKER_LEASE).await
                && !survivor.leads(RENEWER_LEASE).await
                && survivor
                    .leader_check(REVOKER_LEASE)
                    .await
                    .contains("standby")
        },
    )
    .await;
    assert!(c.leads(REVOKER_LEASE).await);
    assert_eq!(
        survivor.metric("vdbi_last_synchronization_success").await,
        None,
        "a replica that lost the renewer Lease still exports its last success"
    );
    let attempts_after = survivor
        .metric(&format!(
            "vdbi_leader_election_attempts_total{{lease_name=\"{REVOKER_LEASE}\"}}"
        ))
        .await
        .unwrap();
    assert!(
        attempts_after > attempts_before,
        "no new campaign after losing the lease"
    );

    // SIGTERM the new leader: it releases, and the replica that lost the lease leads again.
    let t0 = Instant::now();
    c.signal(libc::SIGTERM);
    until(
        &env,
        "the thawed replica leads again",
        Duration::from_secs(15),
        || async { survivor.leads(REVOKER_LEASE).await && survivor.leads(RENEWER_LEASE).await },
    )
    .await;
    let release_handover = t0.elapsed();
    println!(
        "SIGTERM of the leader (lease released) -> standby leads: {:.1} s",
        release_handover.as_secs_f64()
    );
    assert!(release_handover < Duration::from_secs(6));
    drop(c);
    drop(survivor);
    ns.cleanup().await;
    rel.leases.cleanup().await;
}
