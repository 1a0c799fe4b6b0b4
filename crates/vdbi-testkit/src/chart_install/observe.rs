//! What a test watches of a [`NodeRelease`]: the rollout of its workloads, the apiserver calling
//! its webhook, each component's probes and metrics, and what is left after `helm uninstall`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};

use super::{NodeRelease, COMPONENTS};
use crate::chart_rbac::Component;
use crate::platform::http_client;

impl NodeRelease {
    /// Waits until the injector, renewer and revoker Deployments and the NRI DaemonSet have rolled
    /// out their current spec and every pod of it is Ready (no older pod left).
    pub async fn wait_rolled_out(&self, timeout: Duration) -> Duration {
        let t = Instant::now();
        let deployments = self.namespace.api::<Deployment>();
        let daemonsets = self.namespace.api::<DaemonSet>();
        let names = [
            self.name.clone(),
            format!("{}-renewer", self.name),
            format!("{}-revoker", self.name),
        ];
        loop {
            let mut pending = Vec::new();
            for n in &names {
                match deployments.get_opt(n).await.expect("deployment") {
                    Some(d) if deployment_done(&d) => {}
                    Some(d) => pending.push(format!("Deployment {n}: {:?}", d.status)),
                    None => pending.push(format!("Deployment {n} missing")),
                }
            }
            let ds = format!("{}-nri", self.name);
            match daemonsets.get_opt(&ds).await.expect("daemonset") {
                Some(d) if daemonset_done(&d) => {}
                Some(d) => pending.push(format!("DaemonSet {ds}: {:?}", d.status)),
                None => pending.push(format!("DaemonSet {ds} missing")),
            }
            if pending.is_empty() {
                return t.elapsed();
            }
            if t.elapsed() > timeout {
                panic!(
                    "not rolled out after {timeout:?}:\n{}\n{}",
                    pending.join("\n"),
                    self.diagnose().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the apiserver calls the release's webhook for pods of `app_namespace` (it
    /// loads webhook configurations asynchronously): a dry-run pod with an unknown `mode`, which
    /// vdbi refuses, issuing nothing. `service_account` must exist there.
    pub async fn wait_webhook_called(
        &self,
        app_namespace: &str,
        service_account: &str,
        timeout: Duration,
    ) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), app_namespace);
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let t = Instant::now();
        loop {
            let probe: Pod = serde_json::from_value(json!({
                "metadata": {
                    "name": "webhook-probe",
                    "labels": {&self.name: "true"},
                    "annotations": {
                        format!("{}x.mode", crate::PREFIX): "weird",
                        format!("{}x.role", crate::PREFIX): "r",
                        format!("{}x.env-key-dbuser", crate::PREFIX): "U",
                    }
                },
                "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "busybox"}]}
            }))
            .unwrap();
            let answer = pods.create(&dry_run, &probe).await;
            match &answer {
                Err(kube::Error::Api(s)) if s.message.contains("vault-db-injector") => return,
                _ => assert!(
                    t.elapsed() < timeout,
                    "the apiserver does not call the webhook: {answer:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The release's pods and the namespace's events, for a failure message.
    pub async fn diagnose(&self) -> String {
        let mut out = String::new();
        if let Ok(pods) = self
            .namespace
            .api::<Pod>()
            .list(&ListParams::default())
            .await
        {
            for p in pods.items {
                let s = p.status.unwrap_or_default();
                let states: Vec<String> = s
                    .container_statuses
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        format!(
                            "{} ready={} restarts={} {:?}",
                            c.name, c.ready, c.restart_count, c.state
                        )
                    })
                    .collect();
                out += &format!(
                    "pod {}: {:?} {states:?}\n",
                    p.metadata.name.unwrap_or_default(),
                    s.phase
                );
            }
        }
        if let Ok(events) = self
            .namespace
            .api::<Event>()
            .list(&ListParams::default())
            .await
        {
            for e in events.items.iter().rev().take(20) {
                out += &format!(
                    "event {:?} {:?}: {:?}\n",
                    e.involved_object.name, e.reason, e.message
                );
            }
        }
        out
    }

    /// `/readyz` of every component (on the node's network): the JSON of each, by component.
    pub async fn readiness(&self) -> BTreeMap<&'static str, Value> {
        let http = http_client();
        let mut out = BTreeMap::new();
        for c in COMPONENTS {
            let url = format!("http://127.0.0.1:{}/readyz", self.ports(c).health);
            let r = http
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                status.is_success(),
                "{} not ready: {status} {body}",
                c.as_str()
            );
            out.insert(c.as_str(), body);
        }
        out
    }

    /// `/metrics` of a component.
    pub async fn metrics(&self, c: Component) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.ports(c).metrics);
        let r = http_client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.text().await.unwrap()
    }

    /// What is left of the release in Kubernetes: every object labelled with it or named for it
    /// (the chart's objects, the ReplicaSets, pods and revisions made from them, helm's release
    /// records), as `Kind namespace/name`; and separately the Leases vdbi made at run time.
    pub async fn leftovers(&self) -> (Vec<String>, Vec<String>) {
        let by_release =
            ListParams::default().labels(&format!("app.kubernetes.io/instance={}", self.name));
        let mut out = Vec::new();
        macro_rules! namespaced {
            ($($k:ty),*) => {$(
                for o in self.namespace.api::<$k>().list(&by_release).await.expect("list").items {
                    out.push(format!("{} {}/{}", <$k as kube::Resource>::kind(&()), self.namespace.name, o.metadata.name.unwrap_or_default()));
                }
            )*};
        }
        namespaced!(
            Deployment,
            DaemonSet,
            ReplicaSet,
            ControllerRevision,
            Pod,
            ConfigMap,
            Secret,
            Service,
            ServiceAccount,
            Role,
            RoleBinding,
            PodDisruptionBudget
        );
        macro_rules! cluster {
            ($($k:ty),*) => {$(
                for o in Api::<$k>::all(self.client.clone()).list(&by_release).await.expect("list").items {
                    out.push(format!("{} {}", <$k as kube::Resource>::kind(&()), o.metadata.name.unwrap_or_default()));
                }
            )*};
        }
        cluster!(
            ClusterRole,
            ClusterRoleBinding,
            MutatingWebhookConfiguration
        );
        let records = ListParams::default().labels(&format!("owner=helm,name={}", self.name));
        for o in self
            .namespace
            .api::<Secret>()
            .list(&records)
            .await
            .expect("secrets")
            .items
        {
            out.push(format!(
                "helm release record {}",
                o.metadata.name.unwrap_or_default()
            ));
        }
        let leases = self
            .namespace
            .api::<Lease>()
            .list(&ListParams::default())
            .await
            .expect("leases")
            .items
            .into_iter()
            .map(|l| l.metadata.name.unwrap_or_default())
            .collect();
        (out, leases)
    }
}

fn deployment_done(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation >= d.metadata.generation
        && s.replicas == Some(want)
        && s.updated_replicas == Some(want)
        && s.ready_replicas == Some(want)
        && s.available_replicas == Some(want)
}

fn daemonset_done(d: &DaemonSet) -> bool {
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation >= d.metadata.generation
        && s.desired_number_scheduled >= 1
        && s.current_number_scheduled == s.desired_number_scheduled
        && s.updated_number_scheduled == Some(s.desired_number_scheduled)
        && s.number_ready == s.desired_number_scheduled
        && s.number_available == Some(s.desired_number_scheduled)
}
