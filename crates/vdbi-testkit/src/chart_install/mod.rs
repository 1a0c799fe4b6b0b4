//! vdbi installed by its own chart on the kubelet node (`platform/vdbi-kubelet`), as the operator
//! of a cluster without a pod network installs it: `helm install` of `chart/` (helm built from
//! `platform/tools/helm`, the platform's admin kubeconfig), vdbi's image imported into the node's
//! containerd from the archive `scripts/build-image.sh` writes, every component on the node's
//! network (`hostNetwork`) with ports of its own, the webhook called by URL on 127.0.0.1 with the
//! chart's generated certificate, client certificates required from the apiserver, and each
//! component logged in to Vault with its pod's own ServiceAccount token, to a role carrying its
//! published policy only (`deploy/vault`, as `deploy/vault/setup.sh` gives them per component).
//!
//! Everything is scoped to the test: a fresh release namespace, the webhook served for one
//! application namespace only (`namespaceSelector` on its name), a pod label and KV prefix of the
//! release's own (the NRI plugin touches no other test's pods). [`NodeRelease::uninstall`] and
//! [`NodeRelease::leftovers`] check that `helm uninstall` takes everything away; `Drop` uninstalls
//! and removes the Vault roles when a test failed first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use serde_json::{json, Value};

mod image;
mod observe;

use image::free_ports;
pub use image::import_image;

use crate::chart_rbac::{helm, service_account, vault_role, write_vault_role, Component};
use crate::kubelet::KubeletNode;
use crate::platform::{http_client, unique_name, Platform, TestNamespace, VaultRoot};

/// The listen ports of one component: webhook (injector only), metrics, health.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub webhook: u16,
    pub metrics: u16,
    pub health: u16,
}

const COMPONENTS: [Component; 4] = [
    Component::Injector,
    Component::Renewer,
    Component::Revoker,
    Component::Nri,
];

/// One release of the chart on the node (see the module doc).
pub struct NodeRelease {
    /// Release name; also the fullname, the pod label and the KV prefix.
    pub name: String,
    pub namespace: TestNamespace,
    ports: BTreeMap<&'static str, Ports>,
    values: tempfile::NamedTempFile,
    kubeconfig: String,
    client: kube::Client,
    root: VaultRoot,
    auth_mount: String,
    removed: bool,
}

impl NodeRelease {
    /// A release namespace `<prefix>-<random>` with the Secret of the apiserver's webhook client CA,
    /// and a Vault role per component bound to that component's ServiceAccount.
    pub async fn prepare(p: &Platform, client: &kube::Client, prefix: &str) -> NodeRelease {
        let namespace = TestNamespace::create(client, prefix).await;
        let name = unique_name("vdbi-t");
        let ca = std::fs::read_to_string(p.var("VDBI_WEBHOOK_CLIENT_CA_FILE"))
            .expect("webhook client CA");
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "apiserver-webhook-client-ca"},
            "stringData": {"ca.crt": ca}
        }))
        .unwrap();
        namespace
            .api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("client CA Secret");
        let p9 = free_ports(9);
        let ports = BTreeMap::from([
            (
                "injector",
                Ports {
                    webhook: p9[0],
                    metrics: p9[1],
                    health: p9[2],
                },
            ),
            (
                "renewer",
                Ports {
                    webhook: 0,
                    metrics: p9[3],
                    health: p9[4],
                },
            ),
            (
                "revoker",
                Ports {
                    webhook: 0,
                    metrics: p9[5],
                    health: p9[6],
                },
            ),
            (
                "nri",
                Ports {
                    webhook: 0,
                    metrics: p9[7],
                    health: p9[8],
                },
            ),
        ]);
        let rel = NodeRelease {
            name,
            namespace,
            ports,
            values: tempfile::Builder::new().suffix(".json").tempfile().unwrap(),
            kubeconfig: p.var("KUBECONFIG"),
            client: client.clone(),
            root: p.vault_root(),
            auth_mount: p.var("VDBI_K8S_AUTH_MOUNT"),
            removed: false,
        };
        for c in COMPONENTS {
            write_vault_role(
                &rel.root,
                &rel.auth_mount,
                &rel.vault_role(c),
                c,
                &[rel.service_account(c)],
                &rel.namespace.name,
            )
            .await;
        }
        rel
    }

    /// The chart's ServiceAccount of a component (release name = fullname).
    pub fn service_account(&self, c: Component) -> String {
        service_account(&self.name, c)
    }

    pub fn vault_role(&self, c: Component) -> String {
        vault_role(&self.name, c)
    }

    pub fn ports(&self, c: Component) -> Ports {
        self.ports[c.as_str()]
    }

    /// The values an operator of this cluster writes: projected ServiceAccounts + NRI, host
    /// network, the webhook by URL, client certificates, the node's tolerations and NRI socket.
    pub fn values(
        &self,
        p: &Platform,
        node: &KubeletNode,
        app_namespace: &str,
        image: &(String, String),
    ) -> Value {
        let server = p.var("VDBI_KUBE_SERVER");
        let hostport = server.trim_start_matches("https://");
        let (host, port) = hostport
            .rsplit_once(':')
            .expect("apiserver URL with a port");
        // No kube-proxy: the in-cluster address of the apiserver (a Service IP) is not routed.
        let env = json!([
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port}
        ]);
        let taint = node.var("VDBI_KUBELET_NODE_TAINT");
        let tolerations = json!([
            {"key": taint, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}
        ]);
        let ports = |c: &str| {
            let p = self.ports[c];
            if c == "injector" {
                json!({"webhook": p.webhook, "metrics": p.metrics, "health": p.health})
            } else {
                json!({"metrics": p.metrics, "health": p.health})
            }
        };
        let deployment = |c: &str| {
            json!({
                "replicas": 1,
                "containerPorts": ports(c),
                "tolerations": tolerations,
                "extraEnv": env,
            })
        };
        let mut injector = deployment("injector");
        injector["ports"] = json!([{"port": 443, "targetPort": self.ports["injector"].webhook}]);
        // One node: a surge pod would need the ports the running one holds.
        injector["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}});
        injector["clientAuth"] = json!({
            "enabled": true,
            "caSecretName": "apiserver-webhook-client-ca",
            "allowedNames": [p.var("VDBI_WEBHOOK_CLIENT_NAME")],
        });
        let nri_socket = node.nri_socket();
        json!({
            "image": {"repository": image.0, "tag": image.1, "pullPolicy": "Never"},
            "hostNetwork": true,
            "vaultDbInjector": {
                "configuration": {
                    "vaultAddress": p.vault_addr(),
                    "vaultAuthPath": self.auth_mount,
                    "kubeRole": self.vault_role(Component::Injector),
                    "kubeRoleRenewer": self.vault_role(Component::Renewer),
                    "kubeRoleRevoker": self.vault_role(Component::Revoker),
                    "kubeRoleNri": self.vault_role(Component::Nri),
                    "vaultSecretName": p.var("VDBI_KV_MOUNT"),
                    "vaultSecretPrefix": self.name,
                    "defaultEngine": p.var("VDBI_DB_MOUNT"),
                    "webhookMatchLabels": self.name,
                    "injectorLabel": self.name,
                    "useProjectedSA": true,
                    "tokenRequestAudiences": [p.var("VDBI_K8S_AUDIENCE")],
                    "logLevel": "debug",
                },
                "injector": injector,
                "renewer": deployment("renewer"),
                "revoker": deployment("revoker"),
            },
            "nri": {
                "enabled": true,
                "socketDir": nri_socket.parent().expect("NRI socket directory"),
                "containerPorts": ports("nri"),
                "extraEnv": env,
            },
            "webhook": {
                "url": format!("https://127.0.0.1:{}/mutate", self.ports["injector"].webhook),
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": app_namespace}},
                "tls": {"generate": {"ipAddresses": ["127.0.0.1"]}},
            },
        })
    }

    fn helm(&self, args: &[&str]) -> String {
        let out = Command::new(helm())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("running helm");
        assert!(
            out.status.success(),
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm install` (or, once installed, `helm upgrade`) of `chart/` with `values`.
    pub fn apply(&self, values: &Value, upgrade: bool) {
        std::fs::write(
            self.values.path(),
            serde_json::to_vec_pretty(values).unwrap(),
        )
        .unwrap();
        let chart = crate::repo_root().join("chart");
        let chart = chart.to_string_lossy();
        let file = self.values.path().to_string_lossy();
        let verb = if upgrade { "upgrade" } else { "install" };
        self.helm(&[
            verb,
            &self.name,
            &chart,
            "--namespace",
            &self.namespace.name,
            "-f",
            &file,
        ]);
    }

    /// `helm uninstall --wait`, then waits until the garbage collector removed the release's pods.
    pub async fn uninstall(&mut self, timeout: Duration) -> Duration {
        let t = Instant::now();
        self.helm(&[
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace.name,
            "--wait",
            "--timeout",
            "120s",
        ]);
        self.removed = true;
        let pods = self.namespace.api::<Pod>();
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={}", self.name));
        loop {
            let left = pods.list(&lp).await.expect("pods").items;
            if left.is_empty() {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < timeout,
                "{} pod(s) of the release still there {timeout:?} after helm uninstall",
                left.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The NRI plugin's credential cache directory on the node (a hostPath of the DaemonSet).
    pub fn nri_cache_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/{}/nri", self.name))
    }

    /// Removes the Vault roles, the node's cache directory and the namespace.
    pub async fn cleanup(mut self) {
        for c in COMPONENTS {
            let path = format!("auth/{}/role/{}", self.auth_mount, self.vault_role(c));
            self.root
                .request(reqwest::Method::DELETE, &path, None)
                .await;
        }
        let _ = std::fs::remove_dir_all(format!("/run/{}", self.name));
        self.removed = true;
        self.namespace.cleanup_in_place().await;
    }
}

impl Drop for NodeRelease {
    /// A test failed first: uninstall the release (cluster-wide objects included) and remove the
    /// Vault roles; the namespace goes with [`TestNamespace`]'s own drop.
    fn drop(&mut self) {
        if self.removed || std::env::var_os("VDBI_KEEP_TEST_NAMESPACES").is_some() {
            return;
        }
        let _ = Command::new(helm())
            .args([
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace.name,
                "--wait=false",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .output();
        let _ = std::fs::remove_dir_all(format!("/run/{}", self.name));
        let root = self.root.with_http(http_client());
        let paths: Vec<String> = COMPONENTS
            .iter()
            .map(|c| format!("auth/{}/role/{}", self.auth_mount, self.vault_role(*c)))
            .collect();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                for path in paths {
                    root.request(reqwest::Method::DELETE, &path, None).await;
                }
            });
        })
        .join();
    }
}
