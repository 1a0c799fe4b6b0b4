//! The client-side rate limit, deadlines, and the paced lane of the renewer and revoker: a
//! flood of paced calls never delays a foreground one; a caller that gives up leaves its place.

use super::*;

#[actix::test]
async fn rate_limit_applies_to_the_sessions_calls() {
    let s = start_session(Opts {
        adjust: |s| {
            s.rate_limit_per_sec = 5;
            s.rate_burst = 1;
        },
        ..Opts::default()
    })
    .await;
    s.wait_logged_in().await;
    // Let the bucket refill after the login, then 11 calls at 5/s with a burst of 1: ≥ 2 s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let n = 11u32;
    let started = Instant::now();
    // (the paced lane: the renewer's and the revoker's calls)
    let calls = (0..n).map(|_| s.handle.send(Paced(KvList { deadline: soon() })));
    for r in futures::future::join_all(calls).await {
        r.unwrap().expect("KvList");
    }
    let took = started.elapsed();
    let floor = Duration::from_secs_f64((n - 1) as f64 / 5.0);
    assert!(took >= floor.mul_f64(0.8), "{n} calls at 5/s took {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    s.cleanup().await;
}

#[actix::test]
async fn deadlines_bound_every_operation() {
    // Logged in: an already-passed deadline fails at once.
    let s = start_session(Opts::default()).await;
    s.wait_logged_in().await;
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        s.handle.send(KvList {
            deadline: Instant::now(),
        }),
    )
    .await
    .expect("an expired deadline never hangs")
    .unwrap();
    assert!(
        matches!(
            r,
            Err(ActorError::Deadline(_)) | Err(ActorError::NoSession(_))
        ),
        "{r:?}"
    );
    s.cleanup().await;

    // A Vault that accepts connections and never answers: the login hangs, operations do not.
    let (addr, task) = stalled_listener().await;
    let p = vdbi_testkit::platform::Platform::get();
    let jwt = vdbi_testkit::own_jwt(&p, "vdbi-injector").await;
    let client = vault_client(VaultSettings {
        address: format!("http://{addr}"),
        request_timeout: Duration::from_secs(60),
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    })
    .unwrap();
    let cfg = SessionConfig {
        auth_mount: "kubernetes".into(),
        role: "vdbi".into(),
        jwt_path: jwt.path().to_path_buf(),
        kv_mount: "kv".into(),
        kv_prefix: "p".into(),
        renew_increment: Duration::from_secs(3600),
        max_renew_interval: Duration::from_secs(600),
    };
    let (m, h) = (Metrics::new(false), HealthState::new());
    let log = vdbi::telemetry::logging::discard();
    let handle = supervised_session(client, cfg, &m, &h, &log);
    let started = Instant::now();
    let r = handle
        .send(KvGet {
            uuid: "x".into(),
            deadline: Instant::now() + Duration::from_millis(300),
        })
        .await
        .unwrap();
    assert!(matches!(r, Err(ActorError::NoSession(_))), "{r:?}");
    let r = handle
        .send(ReadHealth {
            deadline: Instant::now() + Duration::from_millis(300),
        })
        .await
        .unwrap();
    assert!(
        matches!(r, Err(ActorError::Deadline("ReadHealth"))),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!h.is_ready());
    handle.shutdown();
    let _ = handle.send(RevokeOwnToken).await;
    task.abort();
}

#[actix::test]
async fn a_paced_flood_never_delays_a_foreground_call() {
    // vaultRateLimit 1/s: 20 queued renewer/revoker calls would take 19 s.
    let s = start_session(Opts {
        adjust: |s| {
            s.rate_limit_per_sec = 1;
            s.rate_burst = 1;
        },
        ..Opts::default()
    })
    .await;
    s.wait_logged_in().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let h = s.handle.clone();
            tokio::spawn(async move { h.send(Paced(KvList { deadline })).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // an admission's call goes straight through
    let started = Instant::now();
    for _ in 0..5 {
        s.handle
            .send(KvList { deadline: soon() })
            .await
            .unwrap()
            .expect("foreground KvList");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "5 foreground calls took {took:?}"
    );
    let done = flood.iter().filter(|f| f.is_finished()).count();
    assert!(
        done < 10,
        "the paced calls were not paced ({done} of 20 done)"
    );
    for f in flood {
        f.abort();
    }
    s.cleanup().await;
}

#[actix::test]
async fn a_paced_caller_that_gives_up_releases_its_place() {
    let s = start_session(Opts {
        adjust: |s| {
            s.rate_limit_per_sec = 1;
            s.rate_burst = 1;
        },
        ..Opts::default()
    })
    .await;
    s.wait_logged_in().await;
    let first = s
        .handle
        .send(Paced(KvList { deadline: soon() }))
        .await
        .unwrap();
    first.expect("first paced call");
    // ten callers whose deadline passes while they wait for a slot
    let quitters = (0..10).map(|_| {
        s.handle.send(Paced(KvList {
            deadline: Instant::now() + Duration::from_millis(300),
        }))
    });
    for r in futures::future::join_all(quitters).await {
        assert!(
            matches!(r.unwrap(), Err(ActorError::Deadline(_))),
            "a call past its deadline must fail"
        );
    }
    // they took no slot: the next call waits for at most the one second after the first,
    // not behind ten abandoned slots
    let started = Instant::now();
    s.handle
        .send(Paced(KvList { deadline: soon() }))
        .await
        .unwrap()
        .expect("paced call after the quitters");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    s.cleanup().await;
}
