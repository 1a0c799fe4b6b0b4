//! The NRI plugin stub driven over the real wire protocol (unix socket, mux, ttrpc) by the
//! runtime-side peer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/substituting_handler.rs"]
mod substituting_handler;

use nri::runtime_peer::{PluginConnection, RuntimePeer, RuntimePeerConfig};
use nri::{
    ContainerInfo, EventMask, NriError, PodSandboxInfo, ReconnectBackoff, Session, SessionEnd,
    Stub, StubConfig,
};
use substituting_handler::SubstitutingHandler;

const PLACEHOLDER: &str =
    "__VDBI_PH_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef___";
const SECRET: &str = "s3cr3t-p4ss";

fn pod(n: usize) -> PodSandboxInfo {
    PodSandboxInfo {
        id: format!("sandbox-{n}"),
        name: format!("app-{n}"),
        uid: format!("uid-{n}"),
        namespace: "team-a".into(),
        labels: BTreeMap::from([("vault-db-injector".into(), "true".into())]),
        annotations: BTreeMap::new(),
    }
}

fn container(n: usize, name: &str, env: Vec<String>) -> ContainerInfo {
    ContainerInfo {
        id: format!("ctr-{n}"),
        pod_sandbox_id: format!("sandbox-{n}"),
        name: name.into(),
        env,
        args: vec!["/bin/app".into()],
        ..Default::default()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    peer: RuntimePeer,
    handler: Arc<SubstitutingHandler>,
    stub: Stub,
}

fn setup(tune: impl FnOnce(&mut RuntimePeerConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri/nri.sock");
    let mut config = RuntimePeerConfig::new(&socket);
    tune(&mut config);
    let peer = RuntimePeer::bind(config).unwrap();
    let handler = Arc::new(SubstitutingHandler::new(PLACEHOLDER, SECRET));
    let mut stub_config = StubConfig::new("vault-db-injector", "10");
    stub_config.socket_path = socket;
    let stub = Stub::new(stub_config, handler.clone()).unwrap();
    Setup {
        _dir: dir,
        peer,
        handler,
        stub,
    }
}

async fn connect(setup: &Setup) -> (Session, PluginConnection) {
    let (session, conn) = tokio::join!(setup.stub.connect(), setup.peer.accept());
    (
        session.expect("stub registers"),
        conn.expect("peer accepts"),
    )
}

#[tokio::test]
async fn registers_configures_and_reassembles_split_synchronize() {
    let s = setup(|c| {
        c.pods = (0..5).map(pod).collect();
        c.containers = (0..3).map(|n| container(n, "app", vec![])).collect();
        c.sync_chunk = Some(2);
        c.runtime.runtime_name = "containerd".into();
        c.runtime.request_timeout = Some(Duration::from_millis(1500));
    });
    let (_session, conn) = connect(&s).await;

    assert_eq!(conn.registration.plugin_name, "vault-db-injector");
    assert_eq!(conn.registration.plugin_idx, "10");
    assert_eq!(conn.events, EventMask::HANDLED);
    assert_eq!(conn.events.0, 0xC);

    let configured = s.handler.configured.lock().unwrap().clone();
    assert_eq!(configured.len(), 1);
    assert_eq!(configured[0].runtime_name, "containerd");
    assert_eq!(
        configured[0].request_timeout,
        Some(Duration::from_millis(1500))
    );

    // 8 objects in chunks of 2: four messages, one handler call with everything.
    let synced = s.handler.synced.lock().unwrap().clone();
    assert_eq!(synced.len(), 1);
    let uids: Vec<_> = synced[0].0.iter().map(|p| p.uid.as_str()).collect();
    assert_eq!(uids, ["uid-0", "uid-1", "uid-2", "uid-3", "uid-4"]);
    assert_eq!(synced[0].1.len(), 3);
    assert_eq!(synced[0].0[0].labels["vault-db-injector"], "true");
    assert_eq!(conn.end(), None);
}

#[tokio::test]
async fn create_container_returns_only_changed_variables() {
    let s = setup(|_| {});
    let (_session, conn) = connect(&s).await;

    let env = vec![
        "PATH=/usr/bin".to_string(),
        format!("DB_PASSWORD={PLACEHOLDER}"),
        format!("DB_URL=postgres://user:{PLACEHOLDER}@db:5432/app"),
    ];
    let adj = conn
        .create_container(&pod(1), &container(1, "app", env))
        .await
        .unwrap();
    assert_eq!(
        adj.set,
        vec![
            ("DB_PASSWORD".to_string(), SECRET.to_string()),
            (
                "DB_URL".to_string(),
                format!("postgres://user:{SECRET}@db:5432/app")
            ),
        ]
    );

    let none = conn
        .create_container(&pod(2), &container(2, "app", vec!["A=b".into()]))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn handler_error_fails_the_request_and_keeps_the_connection() {
    let s = setup(|_| {});
    let (_session, conn) = connect(&s).await;

    let err = conn
        .create_container(&pod(1), &container(1, "fail", vec![]))
        .await
        .expect_err("refused");
    match err {
        NriError::Status { code, message, .. } => {
            assert_eq!(code, ttrpc::Code::UNAVAILABLE);
            assert_eq!(message, "vault-db-injector: vault unreachable");
        }
        other => panic!("expected an error status, got {other:?}"),
    }
    // Still connected and serving.
    conn.create_container(&pod(2), &container(2, "app", vec![]))
        .await
        .unwrap();
    assert_eq!(conn.end(), None);
}

#[tokio::test]
async fn slow_handler_gets_an_error_status_before_the_runtime_times_out() {
    let s = setup(|c| c.runtime.request_timeout = Some(Duration::from_millis(1000)));
    let (_session, conn) = connect(&s).await;

    let started = Instant::now();
    let err = conn
        .create_container(&pod(1), &container(1, "slow", vec![]))
        .await
        .expect_err("deadline");
    let took = started.elapsed();
    // An error status (fail closed) and not a runtime-side timeout (which would fail open): the
    // stub answered at 0.75 × 1000 ms, before the runtime gave up.
    match err {
        NriError::Status { code, message, .. } => {
            assert_eq!(code, ttrpc::Code::UNAVAILABLE);
            assert!(message.contains("timed out"), "{message}");
        }
        other => panic!("expected an error status (fail closed), got {other:?}"),
    }
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert_eq!(
        conn.end(),
        None,
        "a timeout on the runtime side would have closed it"
    );
}

#[tokio::test]
async fn messages_larger_than_4096_bytes_cross_in_both_directions() {
    let s = setup(|_| {});
    let (_session, conn) = connect(&s).await;

    // ~60 KB request (runtime → plugin, in large frames) and ~60 KB reply (plugin → runtime,
    // which must respect the Go reader's 4096-byte frame rule).
    let env: Vec<String> = (0..60)
        .map(|i| format!("VAR_{i}={}{PLACEHOLDER}", "x".repeat(1000)))
        .collect();
    let adj = conn
        .create_container(&pod(1), &container(1, "app", env))
        .await
        .unwrap();
    assert_eq!(adj.set.len(), 60);
    assert_eq!(adj.set[59].0, "VAR_59");
    assert_eq!(adj.set[59].1, format!("{}{SECRET}", "x".repeat(1000)));
    assert_eq!(conn.end(), None, "no frame violated the Go read rule");
}

/// The peer holds plugins to containerd's reader: one frame carrying the start of a message and
/// more than 4096 bytes is fatal there, so it must be fatal here.
#[tokio::test]
async fn peer_rejects_frames_the_go_reader_cannot_read() {
    use tokio::io::AsyncWriteExt;

    let s = setup(|_| {});
    let mut raw = tokio::net::UnixStream::connect(s.peer.socket_path())
        .await
        .unwrap();
    // A ttrpc request header (length, stream 1, type request) plus a 5000-byte payload, sent
    // on conn 2 in a single mux frame.
    let mut message = 5000u32.to_be_bytes().to_vec();
    message.extend_from_slice(&1u32.to_be_bytes());
    message.extend_from_slice(&[1, 0]);
    message.resize(10 + 5000, 0);
    let mut frame = 2u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    raw.write_all(&frame).await.unwrap();

    match s.peer.accept().await {
        Err(NriError::Protocol(e)) => assert!(e.contains("ENOMEM"), "{e}"),
        other => panic!(
            "expected a protocol error, got {:?}",
            other.map(|c| c.registration.clone())
        ),
    }
}

#[tokio::test]
async fn concurrent_requests_get_their_own_answers() {
    let s = setup(|_| {});
    let (_session, conn) = connect(&s).await;
    let conn = Arc::new(conn);

    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let env = vec![format!("ID={n}:{PLACEHOLDER}")];
                let adj = conn
                    .create_container(&pod(n), &container(n, "app", env))
                    .await
                    .unwrap();
                assert_eq!(adj.set, vec![("ID".to_string(), format!("{n}:{SECRET}"))]);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(s.handler.creates.load(Ordering::SeqCst), 64);
}

#[tokio::test]
async fn pod_removal_arrives_by_dedicated_rpc_and_by_state_change() {
    let s = setup(|_| {});
    let (_session, conn) = connect(&s).await;

    conn.remove_pod_sandbox(&pod(1)).await.unwrap();
    conn.remove_pod_sandbox_legacy(&pod(2)).await.unwrap();
    assert_eq!(*s.handler.removed.lock().unwrap(), ["uid-1", "uid-2"]);

    // Methods we do not implement must answer UNIMPLEMENTED (never NOT_FOUND), so that NRI
    // v0.12+ runtimes fall back to StateChange.
    for method in [
        "RunPodSandbox",
        "PostCreateContainer",
        "StartContainer",
        "UpdatePodSandbox",
    ] {
        match conn.call_raw(method, Vec::new()).await {
            Err(NriError::Status { code, .. }) => {
                assert_eq!(code, ttrpc::Code::UNIMPLEMENTED, "{method}")
            }
            other => panic!("{method}: expected UNIMPLEMENTED, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn peer_restart_ends_the_session_and_a_new_connection_registers() {
    let s = setup(|_| {});
    let (mut session, conn) = connect(&s).await;

    drop(conn);
    let end = tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .expect("session notices the peer going away");
    assert!(matches!(end, SessionEnd::Disconnected(_)), "{end:?}");

    // The runtime comes back on the same socket path.
    let path = s.peer.socket_path().to_path_buf();
    drop(s.peer);
    let peer = RuntimePeer::bind(RuntimePeerConfig::new(&path)).unwrap();
    let (session, conn) = tokio::join!(s.stub.connect(), peer.accept());
    let (_session, conn) = (session.unwrap(), conn.unwrap());
    conn.create_container(&pod(1), &container(1, "app", vec![]))
        .await
        .unwrap();
    assert_eq!(s.handler.configured.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn run_reconnects_with_backoff_and_resets_after_registration() {
    let s = setup(|_| {});
    let path = s.peer.socket_path().to_path_buf();
    let stub = Arc::new(s.stub);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let stub = stub.clone();
        tokio::spawn(async move {
            // Two waits only: without the reset, the third restart below would exhaust it.
            let mut backoff = ReconnectBackoff::new(vec![Duration::from_millis(20); 2]);
            stub.run(&mut backoff, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };

    let mut peer = s.peer;
    for round in 0..4 {
        let conn = tokio::time::timeout(Duration::from_secs(5), peer.accept())
            .await
            .unwrap_or_else(|_| panic!("round {round}: plugin reconnects"))
            .unwrap();
        conn.create_container(&pod(round), &container(round, "app", vec![]))
            .await
            .unwrap();
        // Runtime restart: connection and listener go away, then come back.
        drop(conn);
        drop(peer);
        tokio::time::sleep(Duration::from_millis(30)).await;
        peer = RuntimePeer::bind(RuntimePeerConfig::new(&path)).unwrap();
    }
    assert_eq!(s.handler.configured.lock().unwrap().len(), 4);

    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn run_gives_up_when_the_schedule_is_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StubConfig::new("vault-db-injector", "10");
    config.socket_path = dir.path().join("missing.sock");
    let stub = Stub::new(
        config,
        Arc::new(SubstitutingHandler::new(PLACEHOLDER, SECRET)),
    )
    .unwrap();

    match stub.connect().await {
        Err(NriError::Connect { .. }) => {}
        other => panic!("expected a connect error, got {:?}", other.map(|_| ())),
    }
    let mut backoff = ReconnectBackoff::new(vec![Duration::from_millis(5); 3]);
    let result = stub.run(&mut backoff, std::future::pending()).await;
    assert!(
        matches!(result, Err(NriError::ReconnectExhausted { attempts: 3 })),
        "{result:?}"
    );
}

#[test]
fn invalid_identities_are_rejected_before_connecting() {
    for (name, idx) in [
        ("", "10"),
        ("bad name", "10"),
        ("ok", "1"),
        ("ok", "100"),
        ("ok", "1a"),
    ] {
        let config = StubConfig::new(name, idx);
        assert!(config.validate().is_err(), "{name:?}/{idx:?} accepted");
    }
    assert!(StubConfig::new("vault-db-injector", "10")
        .validate()
        .is_ok());
}

/// Prints the CreateContainer round-trip latency through socket, mux and ttrpc (both sides in
/// this process). The bound only catches gross regressions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_container_round_trip_latency() {
    let s = setup(|_| {});
    let (_session, conn) = connect(&s).await;
    let env = vec![
        format!("DB_USER={PLACEHOLDER}"),
        format!("DB_PASSWORD={PLACEHOLDER}"),
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
    ];
    let c = container(1, "app", env);
    let p = pod(1);
    for _ in 0..50 {
        conn.create_container(&p, &c).await.unwrap();
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        let adj = conn.create_container(&p, &c).await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(adj.set.len(), 2);
    }
    samples.sort();
    let pct = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "CreateContainer round trip over the NRI wire: p50 {:?}, p90 {:?}, p99 {:?}, max {:?} (n={})",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        samples[samples.len() - 1],
        samples.len()
    );
    assert!(pct(0.5) < Duration::from_millis(20), "p50 {:?}", pct(0.5));
}
