//! The real `vdbi` binary: `check-config` on broken and good files, the daemon refusing a bad
//! file, and the probe/metrics servers of a daemon whose Vault is down, then SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const VDBI: &str = env!("CARGO_BIN_EXE_vdbi");

const GOOD: &str = r#"
mode: injector
certFile: /tls/tls.crt
keyFile: /tls/tls.key
vaultAddress: https://vault:8200
vaultAuthPath: kubernetes
kubeRole: all-rw
vaultSecretName: vault-db-injector
vaultSecretPrefix: kubernetes
sentry: true
sentryDsn: https://hunter2secret@sentry.example/1
"#;

/// Unknown keys (warnings), bad duration, bad type, and six required keys missing.
const BROKEN: &str = r#"
mode: injector
vaultAddress: https://vault:8200
SyncTTLSecond: 60
tokenTTL: forever
vaultRateLimit: lots
nri:
  fetchtimeout: 1s
"#;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs vdbi without any `INJECTOR_*` variable of the caller's environment.
fn vdbi(args: &[&str]) -> Output {
    let mut cmd = Command::new(VDBI);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("INJECTOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run vdbi")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_config_lists_every_problem_of_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "broken.yaml", BROKEN);
    let o = vdbi(&["check-config", "--config", f.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "exit {:?}\n{err}", o.status);
    assert_eq!(o.status.code(), Some(1));
    for expected in [
        "warning: SyncTTLSecond: unknown key, ignored (did you mean `syncTTLSecond`?)",
        "warning: nri.fetchtimeout: unknown key, ignored (did you mean `nri.fetchTimeout`?)",
        "error: tokenTTL: ",
        "error: vaultRateLimit: ",
        "error: certFile: required",
        "error: keyFile: required",
        "error: vaultAuthPath: required",
        "error: kubeRole: required",
        "error: vaultSecretName: required",
        "error: vaultSecretPrefix: required",
    ] {
        assert!(
            err.contains(expected),
            "missing {expected:?} in stderr:\n{err}"
        );
    }
    let tokenttl = err.lines().find(|l| l.contains("tokenTTL")).unwrap();
    assert!(tokenttl.contains("forever"), "{tokenttl}");
    assert!(err.contains("8 error(s): configuration refused"), "{err}");
    assert!(out.is_empty(), "no config printed on failure: {out}");
}

#[test]
fn check_config_prints_the_masked_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "good.yaml", GOOD);
    let o = vdbi(&["check-config", "--config", f.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "exit {:?}\n{err}", o.status);
    assert!(!out.contains("hunter2secret"), "DSN leaked:\n{out}");
    assert!(!err.contains("hunter2secret"), "DSN leaked:\n{err}");
    assert!(out.contains("sentryDsn: ********"), "{out}");
    // The effective configuration: file values and defaults.
    for line in [
        "mode: injector",
        "kubeRole: all-rw",
        "vaultAddress: https://vault:8200",
        "syncTTLSecond: 300",
        "vaultRateLimit: 30",
        "healthListen: 0.0.0.0:8888",
        "metricsListen: 0.0.0.0:8080",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Legacy mode is announced as a warning, not an error.
    assert!(err.contains("warning"), "{err}");
}

#[test]
fn check_config_without_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let o = vdbi(&["check-config", "--config", missing.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("nope.yaml"), "{err}");
}

#[test]
fn daemon_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "bad.yaml", BROKEN);
    let o = vdbi(&["--config", f.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "exit {:?}", o.status);
    assert!(err.contains("SyncTTLSecond"), "{err}");
    assert!(err.contains("certFile"), "{err}");
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A minimal HTTP/1.1 GET: (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    Ok((status, body.to_string()))
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn probes_with_vault_down_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = write(dir.path(), "tls.crt", &ck.cert.pem());
    let key = write(dir.path(), "tls.key", &ck.signing_key.serialize_pem());
    let jwt = write(dir.path(), "token", "not-a-real-jwt");
    let (webhook, metrics, health) = (free_addr(), free_addr(), free_addr());
    let yaml = format!(
        r#"
mode: injector
certFile: {cert}
keyFile: {key}
vaultAddress: http://127.0.0.1:1
vaultAuthPath: kubernetes
kubeRole: vdbi
vaultSecretName: vault-db-injector
vaultSecretPrefix: kubernetes
kubeTokenPath: {jwt}
webhookListen: {webhook}
metricsListen: {metrics}
healthListen: {health}
"#,
        cert = cert.display(),
        key = key.display(),
        jwt = jwt.display(),
    );
    let f = write(dir.path(), "vdbi.yaml", &yaml);
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(VDBI);
    cmd.args(["--config", f.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    for (k, _) in std::env::vars() {
        if k.starts_with("INJECTOR_") {
            cmd.env_remove(k);
        }
    }
    let mut d = Daemon(cmd.spawn().expect("start vdbi"));

    // Liveness answers 200 although Vault is unreachable.
    let until = Instant::now() + Duration::from_secs(20);
    let healthz = loop {
        match get(health, "/healthz") {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    d.0.try_wait().unwrap().is_none(),
                    "vdbi exited before serving probes"
                );
                assert!(Instant::now() < until, "no /healthz: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(healthz.0, 200, "{}", healthz.1);
    let (status, body) = get(health, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON /readyz");
    assert_eq!(v["checks"]["vault-session"]["status"], "unhealthy", "{v}");
    assert_eq!(get(health, "/live").unwrap().0, 200);
    // Wait for at least one failed login to be counted.
    let until = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let (status, m) = get(metrics, "/metrics").unwrap();
        assert_eq!(status, 200);
        if !m.contains("vdbi_connect_vault_count_error 0") {
            break m;
        }
        assert!(Instant::now() < until, "no failed login counted:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(m.contains("vdbi_vault_session_ready 0"), "{m}");
    assert!(m.contains("vdbi_connect_vault_count_error"), "{m}");
    // Still alive after the failures.
    assert_eq!(get(health, "/healthz").unwrap().0, 200);

    // SIGTERM: orderly shutdown, exit 0.
    let pid = d.0.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "vdbi did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "exit {status:?}; stderr:\n{err}");
}
