//! The vdbi fleet of the chaos scenario: real `vdbi` processes, as the chart deploys them — one
//! injector (the apiserver's webhook; legacy, or projected with `--projected`), two renewers and two revokers electing leaders —
//! each with its component's ServiceAccount (the chart's RBAC, a TokenRequest kubeconfig) and
//! Vault role (the published policies), checked by the least-privilege guard before it starts.
//! Members are killed (-9) and started again by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vdbi::actors::leadership::{RENEWER_LEASE, REVOKER_LEASE};
use vdbi_testkit::chart_rbac::{assert_least_privilege, ChartRelease, Component};
use vdbi_testkit::platform::Platform;
use vdbi_testkit::process::{free_port, ProcessSpec, VdbiProcess};

/// The revoker settings of the run.
pub struct RevokerSettings {
    pub unseen_grace: Duration,
    pub orphan_lease_discovery: String,
    pub orphan_lease_grace: Duration,
    /// `<db mount>/<role>` examined by orphan-lease discovery.
    pub orphan_lease_role: String,
}

struct Member {
    config: String,
    kubeconfig: PathBuf,
}

pub struct Fleet {
    p: Platform,
    bin: PathBuf,
    dir: tempfile::TempDir,
    namespace: String,
    members: BTreeMap<String, Member>,
    running: BTreeMap<String, VdbiProcess>,
    /// The injector's webhook URL (its port stays the same across restarts).
    pub webhook_url: String,
    /// The webhook's certificate (PEM), for the registration's caBundle.
    pub cert_pem: String,
}

pub const INJECTOR: &str = "injector-0";
pub const RENEWERS: [&str; 2] = ["renewer-a", "renewer-b"];
pub const REVOKERS: [&str; 2] = ["revoker-a", "revoker-b"];

impl Fleet {
    /// Writes every member's identity and configuration (the guard checks each identity) and
    /// starts them all.
    pub async fn start(
        p: &Platform,
        bin: &Path,
        rel: &ChartRelease,
        prefix: &str,
        revoker: &RevokerSettings,
        projected: bool,
    ) -> Result<Fleet, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])
            .map_err(|e| e.to_string())?;
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&crt, ck.cert.pem()).map_err(|e| e.to_string())?;
        std::fs::write(&key, ck.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
        let port = free_port();
        let auth = p.var("VDBI_K8S_AUTH_MOUNT");
        let mut members = BTreeMap::new();
        let components = [
            (INJECTOR, "injector", Component::Injector),
            (RENEWERS[0], "renewer", Component::Renewer),
            (RENEWERS[1], "renewer", Component::Renewer),
            (REVOKERS[0], "revoker", Component::Revoker),
            (REVOKERS[1], "revoker", Component::Revoker),
        ];
        for (name, mode, component) in components {
            let jwt = rel.jwt_file(component, dir.path()).await;
            let kubeconfig = rel.kubeconfig(component, dir.path()).await;
            // A legacy injector logs in with the legacy single role, as the chart configures it;
            // a projected one with its own (bookkeeping only).
            let vault_role = rel.vault_role(if component == Component::Injector && !projected {
                Component::All
            } else {
                component
            });
            let kube = rel.kube_client(component).await;
            assert_least_privilege(p, Some(&kube), &auth, &[&vault_role]).await;
            let extra = match mode {
                "injector" => format!(
                    "webhookListen: 127.0.0.1:{port}\nwebhookClientCAFile: {}\n\
                     webhookClientAllowedNames: [{}]\n{}",
                    p.var("VDBI_WEBHOOK_CLIENT_CA_FILE"),
                    p.var("VDBI_WEBHOOK_CLIENT_NAME"),
                    if projected {
                        format!(
                            "useProjectedSA: true\ntokenRequestAudiences: [{}]\n",
                            p.var("VDBI_K8S_AUDIENCE")
                        )
                    } else {
                        String::new()
                    },
                ),
                "revoker" => format!(
                    "revokerUnseenGrace: {}s\norphanLeaseDiscovery: {}\norphanLeaseGrace: {}s\n\
                     orphanLeaseRoles: [{}]\n",
                    revoker.unseen_grace.as_secs(),
                    revoker.orphan_lease_discovery,
                    revoker.orphan_lease_grace.as_secs(),
                    revoker.orphan_lease_role,
                ),
                _ => String::new(),
            };
            let config = format!(
                "mode: {mode}\nvaultAddress: {}\nvaultAuthPath: {auth}\nkubeRole: {vault_role}\n\
                 vaultSecretName: {}\nvaultSecretPrefix: {prefix}\nkubeTokenPath: {}\n\
                 certFile: {}\nkeyFile: {}\nvaultRateLimit: 0\nlogLevel: info\n{extra}",
                p.vault_addr(),
                p.var("VDBI_KV_MOUNT"),
                jwt.display(),
                crt.display(),
                key.display(),
            );
            members.insert(name.to_string(), Member { config, kubeconfig });
        }
        let mut fleet = Fleet {
            p: p.clone(),
            bin: bin.to_path_buf(),
            dir,
            namespace: rel.namespace.name.clone(),
            members,
            running: BTreeMap::new(),
            webhook_url: format!("https://127.0.0.1:{port}/mutate"),
            cert_pem: ck.cert.pem(),
        };
        let names: Vec<String> = fleet.members.keys().cloned().collect();
        for n in names {
            fleet.spawn(&n);
        }
        Ok(fleet)
    }

    /// Starts member `name` (again).
    pub fn spawn(&mut self, name: &str) {
        let m = &self.members[name];
        let proc = VdbiProcess::spawn(
            &self.p,
            ProcessSpec {
                bin: &self.bin,
                dir: self.dir.path(),
                name,
                config: m.config.clone(),
                kubeconfig: &m.kubeconfig,
                pod_namespace: &self.namespace,
            },
        );
        self.running.insert(name.to_string(), proc);
    }

    /// kill -9 of member `name` (reaped); [`Fleet::spawn`] brings it back.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut proc) = self.running.remove(name) {
            proc.kill();
        }
    }

    pub fn get(&self, name: &str) -> Option<&VdbiProcess> {
        self.running.get(name)
    }

    /// Waits until the injector answers ready, bounded.
    pub async fn injector_ready(&self, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(i) = self.get(INJECTOR) {
                if i.readyz().await.is_some_and(|(s, _)| s == 200) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The member of `mode` (renewer or revoker) leading its lease, waited for (bounded).
    pub async fn leader(&self, mode: &str, limit: Duration) -> Option<String> {
        let (names, lease) = match mode {
            "renewer" => (RENEWERS, RENEWER_LEASE),
            _ => (REVOKERS, REVOKER_LEASE),
        };
        let t = Instant::now();
        while t.elapsed() < limit {
            for n in names {
                if let Some(proc) = self.get(n) {
                    if proc.leads(lease).await {
                        return Some(n.to_string());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Every member's log directory (kept while the fleet lives).
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of every member's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.running
            .values()
            .map(|p| format!("--- {}\n{}\n", p.name, p.log_tail(lines)))
            .collect()
    }

    /// Stops every member (kill -9: nothing vdbi does at shutdown may hide a leftover).
    pub fn stop(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
    }
}
