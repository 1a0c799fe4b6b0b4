//! Sentry error reporting on the wire: vdbi's logger with `sentry: true` posts envelopes to a
//! loopback HTTP server standing in for Sentry (which cannot run here), and that server records
//! what arrives. Also the failure paths (closed port, full queue), the panic report, and the real
//! binary reporting its fatal startup error before it exits.

use serde_json::Value;
use slog::{error, info, o, warn};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};
use vdbi::config::LogLevel;
use vdbi::telemetry::sentry::QUEUE_CAPACITY;
use vdbi::telemetry::{build_logger, Metrics, Sentry, SentrySettings};

/// One request the stand-in received.
struct Received {
    method: String,
    path: String,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: String,
}

impl Received {
    /// The envelope's three lines: header, item header, event.
    fn envelope(&self) -> (Value, Value, Value) {
        let lines: Vec<&str> = self.body.trim_end().split('\n').collect();
        assert_eq!(lines.len(), 3, "envelope lines:\n{}", self.body);
        let item: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(item["length"], lines[2].len(), "item length");
        (
            serde_json::from_str(lines[0]).unwrap(),
            item,
            serde_json::from_str(lines[2]).unwrap(),
        )
    }

    fn event(&self) -> Value {
        self.envelope().2
    }
}

/// A loopback HTTP server answering 200 to everything and reporting each request.
fn stand_in() -> (u16, Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || serve(conn, &tx));
        }
    });
    (port, rx)
}

fn serve(conn: TcpStream, tx: &Sender<Received>) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    // Recorded before answering: once the client has its answer, the record is there.
    let _ = tx.send(Received {
        method,
        path,
        headers,
        body: String::from_utf8(body).unwrap(),
    });
    let mut conn = conn;
    let _ = conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
}

/// A registry and a reporter posting to `http://publickey@127.0.0.1:<port>/<path>`.
fn reporter(port: u16, path: &str) -> (Metrics, Sentry) {
    let metrics = Metrics::new(false);
    let settings = SentrySettings {
        dsn: format!("http://publickey@127.0.0.1:{port}/{path}"),
        environment: "staging-eu".into(),
        server_name: "vdbi-renewer-0".into(),
        mode: "renewer".into(),
    };
    let sentry = Sentry::start(settings, metrics.process.sentry_events()).unwrap();
    (metrics, sentry)
}

fn events_total(m: &Metrics, result: &str) -> f64 {
    let prefix = format!("vdbi_sentry_events_total{{result=\"{result}\"}} ");
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{}", m.render()))
}

/// A port nothing listens on (also a free one to listen on).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn error_records_arrive_as_events_and_info_records_do_not() {
    let (port, rx) = stand_in();
    let (metrics, sentry) = reporter(port, "42");
    let (log, _guard) = build_logger(LogLevel::Info, Some(&sentry));
    let log = log.new(o!("component" => "renewer"));
    info!(log, "renewer cycle done"; "uuid" => "u-0");
    warn!(log, "lease close to its max TTL"; "uuid" => "u-0");
    error!(log, "lease renewal failed"; "uuid" => "u-1", "namespace" => "team-a", "attempt" => 3);

    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("an envelope");
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/api/42/envelope/");
    let auth = &got.headers["x-sentry-auth"];
    assert!(auth.starts_with("Sentry sentry_version=7,"), "{auth}");
    assert!(auth.contains("sentry_key=publickey"), "{auth}");
    assert!(auth.contains("sentry_client=vdbi/"), "{auth}");
    assert_eq!(got.headers["content-type"], "application/x-sentry-envelope");
    assert!(
        !got.body.contains("publickey"),
        "the key left the auth header:\n{}",
        got.body
    );
    let (header, item, event) = got.envelope();
    assert_eq!(item["type"], "event");
    assert_eq!(header["event_id"], event["event_id"]);
    // The first envelope is the error's: the info and warning records (logged before) sent nothing.
    assert_eq!(event["level"], "error");
    assert_eq!(event["message"], "lease renewal failed");
    assert_eq!(event["logentry"]["formatted"], "lease renewal failed");
    assert_eq!(event["environment"], "staging-eu");
    assert_eq!(event["server_name"], "vdbi-renewer-0");
    assert_eq!(event["logger"], "renewer");
    assert!(event["release"].as_str().unwrap().starts_with("vdbi@"));
    let tags = &event["tags"];
    assert_eq!(tags["uuid"], "u-1", "{tags}");
    assert_eq!(tags["namespace"], "team-a", "{tags}");
    assert_eq!(tags["attempt"], "3", "{tags}");
    assert_eq!(tags["component"], "renewer", "{tags}");
    assert_eq!(tags["mode"], "renewer", "{tags}");

    // Nothing else: one error, one event.
    info!(log, "another info");
    assert!(sentry.flush(Duration::from_secs(5)));
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(events_total(&metrics, "sent"), 1.0);
    assert_eq!(events_total(&metrics, "failed"), 0.0);

    // Critical is reported as fatal.
    slog::crit!(log, "cannot go on");
    let event = rx.recv_timeout(Duration::from_secs(5)).unwrap().event();
    assert_eq!(event["level"], "fatal");
    assert_eq!(event["message"], "cannot go on");
}

#[test]
fn a_closed_port_counts_failed_without_blocking_the_logger() {
    let (metrics, sentry) = reporter(closed_port(), "42");
    let (log, _guard) = build_logger(LogLevel::Info, Some(&sentry));
    let t0 = Instant::now();
    error!(log, "renewal failed"; "uuid" => "u-1");
    assert!(
        t0.elapsed() < Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    assert!(sentry.flush(Duration::from_secs(5)), "not flushed");
    assert_eq!(events_total(&metrics, "failed"), 1.0);
    assert_eq!(events_total(&metrics, "sent"), 0.0);
    assert_eq!(events_total(&metrics, "dropped"), 0.0);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    // Accepts connections (the kernel does) but never answers: every post takes its 2 s timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (metrics, sentry) = reporter(port, "42");
    let (log, _guard) = build_logger(LogLevel::Info, Some(&sentry));
    let extra = 50;
    let t0 = Instant::now();
    for i in 0..QUEUE_CAPACITY + extra {
        error!(log, "renewal failed"; "i" => i);
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "the logger waited {took:?}");
    // At most one event is in flight, QUEUE_CAPACITY wait: the rest was dropped.
    let dropped = events_total(&metrics, "dropped");
    assert!(
        dropped >= (extra - 1) as f64 && dropped <= extra as f64,
        "dropped {dropped}"
    );
    assert!(
        !sentry.flush(Duration::from_millis(100)),
        "flush cannot be done yet"
    );
    drop(silent);
}

#[test]
fn panics_are_reported_as_fatal_events() {
    let (port, rx) = stand_in();
    let (metrics, sentry) = reporter(port, "sentry/42");

    // What the hook calls: synchronous, so the event is there when it returns.
    assert!(sentry.report_panic("index out of bounds", Some("src/renewer.rs:10:5")));
    let got = rx.try_recv().expect("posted before report_panic returned");
    assert_eq!(got.path, "/sentry/api/42/envelope/");
    let event = got.event();
    assert_eq!(event["level"], "fatal");
    assert_eq!(event["message"], "panic: index out of bounds");
    assert_eq!(event["tags"]["location"], "src/renewer.rs:10:5");
    assert_eq!(event["environment"], "staging-eu");

    // The installed hook, on a real panic (in a thread of its own).
    sentry.install_panic_hook();
    let doomed = std::thread::Builder::new()
        .name("doomed".into())
        .spawn(|| panic!("deliberate test panic"))
        .unwrap();
    assert!(doomed.join().is_err());
    let event = rx
        .recv_timeout(Duration::from_secs(1))
        .expect("the hook's event")
        .event();
    assert_eq!(event["level"], "fatal");
    assert_eq!(event["message"], "panic: deliberate test panic");
    assert_eq!(event["tags"]["thread"], "doomed");
    let location = event["tags"]["location"].as_str().unwrap();
    assert!(location.starts_with("tests/sentry.rs:"), "{location}");
    assert_eq!(events_total(&metrics, "sent"), 2.0);
}

fn vdbi(config: &str, dir: &std::path::Path) -> std::process::Output {
    let f = dir.join("vdbi.yaml");
    std::fs::write(&f, config).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vdbi"));
    cmd.args(["--config", f.to_str().unwrap()])
        .env("POD_NAME", "vdbi-injector-7");
    for (k, _) in std::env::vars() {
        if k.starts_with("INJECTOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run vdbi")
}

#[test]
fn the_binary_reports_its_fatal_error_before_exiting() {
    let (port, rx) = stand_in();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
mode: injector
certFile: {dir}/missing.crt
keyFile: {dir}/missing.key
vaultAddress: http://127.0.0.1:1
vaultAuthPath: kubernetes
kubeRole: vdbi
vaultSecretName: vault-db-injector
vaultSecretPrefix: kubernetes
kubeTokenPath: {dir}/token
webhookListen: 127.0.0.1:{webhook}
metricsListen: 127.0.0.1:{metrics}
healthListen: 127.0.0.1:{health}
sentry: true
sentryDsn: http://publickey@127.0.0.1:{port}/42
sentryEnvironment: ci
"#,
        dir = dir.path().display(),
        webhook = closed_port(),
        metrics = closed_port(),
        health = closed_port(),
    );
    let out = vdbi(&config, dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The process has exited: whatever it reported has arrived.
    let events: Vec<Value> = rx.try_iter().map(|r| r.event()).collect();
    let fatal = events
        .iter()
        .find(|e| e["message"] == "vdbi stopped with an error")
        .unwrap_or_else(|| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            panic!("not reported; got {events:#?}\nstderr:\n{stderr}")
        });
    assert_eq!(fatal["level"], "error");
    assert_eq!(fatal["environment"], "ci");
    assert_eq!(fatal["server_name"], "vdbi-injector-7");
    assert_eq!(fatal["tags"]["mode"], "injector");
    assert!(
        fatal["tags"]["error"]
            .as_str()
            .unwrap()
            .contains("missing.crt"),
        "{fatal}"
    );

    // A malformed DSN stops the daemon at startup, the key masked.
    let bad = config.replace(&format!("127.0.0.1:{port}/42"), "127.0.0.1/");
    let out = vdbi(&bad, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sentryDsn"), "{stderr}");
    assert!(stderr.contains("no project id"), "{stderr}");
    assert!(!stderr.contains("publickey"), "{stderr}");
}
