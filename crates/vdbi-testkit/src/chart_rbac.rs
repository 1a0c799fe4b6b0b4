//! vdbi with exactly the rights an operator gives it: the Helm chart's RBAC and the published
//! Vault policies.
//!
//! [`ChartRelease::install`] renders `chart/templates/rbac.yaml` with `helm template` (helm built
//! from `platform/tools/helm`), in a fresh release namespace with a unique `fullnameOverride`, and
//! creates the rendered ServiceAccounts, (Cluster)Roles and (Cluster)RoleBindings unchanged. It
//! also writes Vault kubernetes-auth roles bound to those ServiceAccounts that carry the published
//! policies (`deploy/vault/*.hcl`, given as `deploy/vault/setup.sh` gives them). vdbi then runs with [`ChartRelease::kube_client`] / [`ChartRelease::kubeconfig`]
//! (a TokenRequest token of the component's ServiceAccount) and logs in with
//! [`ChartRelease::jwt_file`] to one of [`ChartRelease::vault_role`].
//!
//! `mode: all` has no ServiceAccount of its own in the chart (it deploys one component per
//! Deployment): [`Component::All`] is a ServiceAccount added as a subject to every rendered
//! binding — the union of the components' rules, nothing more.
//!
//! The guard [`assert_least_privilege`] refuses to start vdbi with the platform's admin identity
//! (group `system:masters`) or a Vault role whose policies are not the published ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};

use crate::platform::{http_client, unique_name, Platform, TestNamespace, VaultRoot};

/// The policies published for vdbi: `vdbi-<stem>` of every `deploy/vault/*.hcl` but `app.hcl`
/// (the per-application template). Nothing else may be given to vdbi in tests.
pub fn published_policies() -> Vec<String> {
    let dir = crate::repo_root().join("deploy/vault");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".hcl")?;
            (stem != "app").then(|| format!("vdbi-{stem}"))
        })
        .collect();
    out.sort();
    out
}

/// A vdbi component, as the chart deploys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Injector,
    Renewer,
    Revoker,
    Nri,
    /// `mode: all` (tests and the load-test harness only): the union of the chart's rules.
    All,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Injector => "injector",
            Component::Renewer => "renewer",
            Component::Revoker => "revoker",
            Component::Nri => "nri",
            Component::All => "all",
        }
    }

    /// The component a `mode` runs as.
    pub fn of_mode(mode: vdbi::config::Mode) -> Component {
        use vdbi::config::Mode;
        match mode {
            Mode::Injector => Component::Injector,
            Mode::Renewer => Component::Renewer,
            Mode::Revoker => Component::Revoker,
            Mode::Nri => Component::Nri,
            _ => Component::All,
        }
    }

    /// The published policies of the component's role, as `deploy/vault/setup.sh` gives them:
    /// one per component (projected split), and for `All` those of the legacy single role.
    pub fn policies(self) -> &'static [&'static str] {
        match self {
            Component::Injector => &["vdbi-injector-projected"],
            Component::Renewer => &["vdbi-renewer"],
            Component::Revoker => &["vdbi-revoker"],
            Component::Nri => &["vdbi-nri-projected"],
            Component::All => &[
                "vdbi-injector-legacy",
                "vdbi-renewer",
                "vdbi-revoker",
                "vdbi-nri-legacy",
            ],
        }
    }
}

const COMPONENTS: [Component; 5] = [
    Component::Injector,
    Component::Renewer,
    Component::Revoker,
    Component::Nri,
    Component::All,
];

/// Path of a helm binary built from `platform/tools/helm` (built once per cache).
pub fn helm() -> PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let repo = crate::repo_root();
        let out = std::process::Command::new(repo.join("platform/tools/helm/ensure.sh"))
            .arg("helm")
            .output()
            .expect("running platform/tools/helm/ensure.sh");
        assert!(
            out.status.success(),
            "cannot build helm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// `helm template` of the chart's RBAC for `fullname` in `namespace` (projected mode and NRI on,
/// so every rule the chart can render is there).
pub fn render_rbac(fullname: &str, namespace: &str) -> Vec<Value> {
    let chart = crate::repo_root().join("chart");
    let out = std::process::Command::new(helm())
        .args(["template", "vdbi"])
        .arg(&chart)
        .args([
            "--namespace",
            namespace,
            "--show-only",
            "templates/rbac.yaml",
        ])
        .args(["--set", &format!("fullnameOverride={fullname}")])
        .args(["--set", "nri.enabled=true"])
        .args(["--set", "vaultDbInjector.configuration.useProjectedSA=true"])
        .args([
            "--set",
            "vaultDbInjector.configuration.tokenRequestAudiences={vault}",
        ])
        .output()
        .expect("running helm template");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("helm renders YAML");
        if v.is_object() {
            docs.push(v);
        }
    }
    docs
}

/// One installed "release" of the chart's RBAC (see the module doc). Call
/// [`ChartRelease::cleanup`] at the end.
pub struct ChartRelease {
    /// The release namespace: the components' ServiceAccounts and Leases live here.
    pub namespace: TestNamespace,
    pub fullname: String,
    client: kube::Client,
    root: VaultRoot,
    auth_mount: String,
    cluster_objects: Vec<(ApiResource, String)>,
    kube_server: String,
    kube_ca: String,
    cleaned: bool,
}

impl std::fmt::Debug for ChartRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartRelease")
            .field("namespace", &self.namespace.name)
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

fn api_resource(obj: &Value) -> ApiResource {
    let (group, version) = match obj["apiVersion"].as_str().unwrap_or("v1").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap_or("v1").to_string(),
        ),
    };
    let kind = obj["kind"].as_str().unwrap_or_default();
    ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, kind))
}

impl ChartRelease {
    /// A fresh namespace `<prefix>-<random>` with the chart's RBAC rendered for it, and the
    /// Vault roles of its ServiceAccounts.
    pub async fn install(p: &Platform, client: &kube::Client, prefix: &str) -> ChartRelease {
        let namespace = TestNamespace::create(client, prefix).await;
        let fullname = unique_name("vdbi");
        let all_sa = format!("{fullname}-all");
        let mut cluster_objects = Vec::new();
        namespace.service_account(&all_sa).await;
        for mut obj in render_rbac(&fullname, &namespace.name) {
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            if !matches!(
                kind.as_str(),
                "ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
            ) {
                continue;
            }
            if kind.ends_with("Binding") {
                if let Some(subjects) = obj["subjects"].as_array_mut() {
                    subjects.push(json!({"kind": "ServiceAccount", "name": all_sa, "namespace": namespace.name}));
                }
            }
            let ar = api_resource(&obj);
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let dynobj: DynamicObject = serde_json::from_value(obj).expect("rendered object");
            let api: Api<DynamicObject> = match dynobj.metadata.namespace.as_deref() {
                Some(ns) if kind != "ClusterRole" && kind != "ClusterRoleBinding" => {
                    Api::namespaced_with(client.clone(), ns, &ar)
                }
                _ => Api::all_with(client.clone(), &ar),
            };
            match api.create(&PostParams::default(), &dynobj).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => panic!("creating {kind} {name} of the chart's RBAC: {e}"),
            }
            if kind.starts_with("Cluster") {
                cluster_objects.push((ar, name));
            }
        }
        let rel = ChartRelease {
            namespace,
            fullname,
            client: client.clone(),
            root: p.vault_root(),
            auth_mount: p.var("VDBI_K8S_AUTH_MOUNT"),
            cluster_objects,
            kube_server: p.var("VDBI_KUBE_SERVER"),
            kube_ca: p.var("VDBI_KUBE_CA_FILE"),
            cleaned: false,
        };
        let sas: Vec<String> = COMPONENTS.iter().map(|c| rel.service_account(*c)).collect();
        for c in COMPONENTS {
            write_vault_role(
                &rel.root,
                &rel.auth_mount,
                &rel.vault_role(c),
                c,
                &sas,
                &rel.namespace.name,
            )
            .await;
        }
        rel
    }

    /// The component's ServiceAccount (the chart's naming: the injector's is the fullname).
    pub fn service_account(&self, c: Component) -> String {
        service_account(&self.fullname, c)
    }

    /// The Vault kubernetes-auth role carrying the component's published policies
    /// ([`Component::All`]: those of the legacy single role).
    pub fn vault_role(&self, c: Component) -> String {
        vault_role(&self.fullname, c)
    }

    /// A TokenRequest token of the component's ServiceAccount (`audiences` empty: the
    /// apiserver's), valid one hour.
    pub async fn token(&self, c: Component, audiences: &[&str]) -> String {
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let sa = self.service_account(c);
        let resp: TokenRequest =
            Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace.name)
                .create_subresource("token", &sa, &PostParams::default(), &req)
                .await
                .unwrap_or_else(|e| panic!("TokenRequest for {sa}: {e}"));
        resp.status.expect("TokenRequest status").token
    }

    /// Writes `<dir>/<component>.jwt` (0600), the component's JWT for Vault (audience
    /// `vault`): vdbi's `kubeTokenPath`.
    pub async fn jwt_file(&self, c: Component, dir: &Path) -> PathBuf {
        let jwt = self.token(c, &["vault"]).await;
        let path = dir.join(format!("{}.jwt", c.as_str()));
        write_private(&path, jwt.as_bytes());
        path
    }

    /// Writes `<dir>/<component>.kubeconfig` authenticating as the component's ServiceAccount.
    pub async fn kubeconfig(&self, c: Component, dir: &Path) -> PathBuf {
        let token = self.token(c, &[]).await;
        let path = dir.join(format!("{}.kubeconfig", c.as_str()));
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
            self.kube_server, self.kube_ca,
        );
        write_private(&path, cfg.as_bytes());
        path
    }

    /// A Kubernetes client as the component's ServiceAccount.
    pub async fn kube_client(&self, c: Component) -> kube::Client {
        crate::platform::install_crypto_provider();
        let token = self.token(c, &[]).await;
        let kubeconfig: kube::config::Kubeconfig = serde_yaml::from_str(&format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
            self.kube_server, self.kube_ca,
        ))
        .expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config of a ServiceAccount");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Removes the cluster-scoped objects, the Vault roles and the namespace.
    pub async fn cleanup(mut self) {
        self.remove_outside_namespace(&self.client).await;
        self.cleaned = true;
        self.namespace.cleanup_in_place().await;
    }

    async fn remove_outside_namespace(&self, client: &kube::Client) {
        for (ar, name) in &self.cluster_objects {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        for c in COMPONENTS {
            self.root
                .request(
                    reqwest::Method::DELETE,
                    &format!("auth/{}/role/{}", self.auth_mount, self.vault_role(c)),
                    None,
                )
                .await;
        }
    }
}

/// The chart's ServiceAccount of component `c` in release `fullname` (the injector's is the
/// fullname itself).
pub fn service_account(fullname: &str, c: Component) -> String {
    match c {
        Component::Injector => fullname.to_string(),
        other => format!("{fullname}-{}", other.as_str()),
    }
}

/// The Vault kubernetes-auth role the tests create for component `c` of release `fullname`.
pub fn vault_role(fullname: &str, c: Component) -> String {
    format!("{fullname}-{}", c.as_str())
}

/// Writes the kubernetes-auth role `role` (set-up, root): the component's published policies
/// only, bound to `service_accounts` in `namespace`.
pub async fn write_vault_role(
    root: &VaultRoot,
    auth_mount: &str,
    role: &str,
    c: Component,
    service_accounts: &[String],
    namespace: &str,
) {
    root.write(
        &format!("auth/{auth_mount}/role/{role}"),
        &json!({
            "bound_service_account_names": service_accounts,
            "bound_service_account_namespaces": [namespace],
            "token_policies": c.policies(),
            "token_no_default_policy": true,
            "token_ttl": "1h",
            "token_max_ttl": "24h",
        }),
    )
    .await;
}

impl Drop for ChartRelease {
    /// Not cleaned up (a test failed first): cluster-scoped objects and Vault roles are removed
    /// from a helper thread; the namespace goes with [`TestNamespace`]'s own drop.
    fn drop(&mut self) {
        if self.cleaned || std::env::var_os("VDBI_KEEP_TEST_NAMESPACES").is_some() {
            return;
        }
        let cluster_objects = std::mem::take(&mut self.cluster_objects);
        // A client of this helper thread's own runtime: the test's pooled connections belong
        // to a runtime that may be gone by now.
        let root = self.root.with_http(http_client());
        let auth_mount = self.auth_mount.clone();
        let roles: Vec<String> = COMPONENTS.iter().map(|c| self.vault_role(*c)).collect();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let client = Platform::get().kube_client().await;
                for (ar, name) in &cluster_objects {
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
                    let _ = api.delete(name, &DeleteParams::default()).await;
                }
                for role in roles {
                    root.request(
                        reqwest::Method::DELETE,
                        &format!("auth/{auth_mount}/role/{role}"),
                        None,
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Who a Kubernetes client authenticates as: (user name, groups).
pub async fn whoami(client: &kube::Client) -> (String, Vec<String>) {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review: SelfSubjectReview = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview");
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    (
        info.username.unwrap_or_default(),
        info.groups.unwrap_or_default(),
    )
}

/// The guard every test start of vdbi goes through: it panics when vdbi would run with the
/// platform's admin identity (group `system:masters`, or not a ServiceAccount at all), or log in
/// to Vault with a role whose policies are not among [`published_policies`] (the root token has no
/// role: vdbi cannot be given it).
pub async fn assert_least_privilege(
    p: &Platform,
    kube: Option<&kube::Client>,
    vault_auth_mount: &str,
    vault_roles: &[&str],
) {
    if let Some(kube) = kube {
        let (user, groups) = whoami(kube).await;
        assert!(
            user.starts_with("system:serviceaccount:")
                && !groups.iter().any(|g| g == "system:masters"),
            "vdbi must run with the chart's RBAC (a ServiceAccount token), not as {user} {groups:?}"
        );
    }
    let root = p.vault_root();
    let published = published_policies();
    for role in vault_roles.iter().filter(|r| !r.is_empty()) {
        let body = root
            .read(&format!("auth/{vault_auth_mount}/role/{role}"))
            .await;
        let policies: Vec<String> = body["data"]["token_policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        assert!(
            !policies.is_empty() && policies.iter().all(|pol| published.contains(pol)),
            "vdbi's Vault role {role} must carry only published policies, has {policies:?}"
        );
    }
}

/// Labels of the objects [`render_rbac`] produced, by kind (for tests of the harness itself).
pub fn kinds(objs: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in objs {
        *out.entry(o["kind"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    out
}
