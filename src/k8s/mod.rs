//! Kubernetes client helpers: client construction, pod-bound TokenRequest, live pod reads.
//! No actors here; the actors call these.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::Client;
use std::fmt;

pub mod leader_election;

/// The Kubernetes layer's error.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    #[error("TokenRequest for {namespace}/{service_account} returned no token")]
    EmptyToken {
        namespace: String,
        service_account: String,
    },
}

impl KubeError {
    fn status(&self) -> Option<u16> {
        match self {
            KubeError::Api(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }

    /// `vdbi_token_request_errors_total{reason}` (compat §3.9).
    pub fn token_request_reason(&self) -> &'static str {
        match self.status() {
            Some(403) => "rbac_denied",
            Some(404) => "sa_not_found",
            Some(401) => "unauthorized",
            _ => "other",
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The API refused the call for lack of RBAC rights (403).
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403)
    }

    /// A short label for metrics: `forbidden`, `unauthorized` or `other`.
    pub fn reason(&self) -> &'static str {
        match self.status() {
            Some(403) => "forbidden",
            Some(401) => "unauthorized",
            _ => "other",
        }
    }
}

/// A ServiceAccount JWT. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountJwt(String);

impl ServiceAccountJwt {
    pub fn new(s: String) -> Self {
        ServiceAccountJwt(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServiceAccountJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceAccountJwt(***)")
    }
}

/// In-cluster configuration, else `KUBECONFIG` / `~/.kube/config`.
pub async fn client() -> Result<Client, KubeError> {
    Client::try_default()
        .await
        .map_err(|e| KubeError::Config(e.to_string()))
}

/// The pod a token is bound to: the token dies with the pod.
#[derive(Clone, Debug)]
pub struct PodBinding {
    pub name: String,
    pub uid: String,
}

/// TokenRequest for `namespace/service_account`, with audiences, expiry and (when known) bound
/// to the pod (vault-db-injector did not bind it).
pub async fn token_request(
    client: &Client,
    namespace: &str,
    service_account: &str,
    audiences: &[String],
    expiration_seconds: i64,
    bind_to: Option<&PodBinding>,
) -> Result<ServiceAccountJwt, KubeError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.to_vec(),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: bind_to.map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(p.name.clone()),
                uid: Some(p.uid.clone()),
            }),
        },
        ..Default::default()
    };
    let resp = api
        .create_token_request(service_account, &PostParams::default(), &req)
        .await?;
    let token = resp
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| KubeError::EmptyToken {
            namespace: namespace.into(),
            service_account: service_account.into(),
        })?;
    Ok(ServiceAccountJwt(token))
}

/// A live read of a pod; `None` when it does not exist.
pub async fn get_pod(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Pod>, KubeError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?)
}

/// A live read of a pod through `list` with a name field selector: what the chart grants the
/// renewer and revoker (`list`/`watch` on pods, no `get`). `None` when it does not exist.
pub async fn find_pod(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Pod>, KubeError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
    let list = api.list(&lp).await?;
    Ok(list
        .items
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name)))
}

/// Reads vdbi's own ServiceAccount JWT (re-read on every login: kubelet rotates it).
pub fn read_own_jwt(path: &std::path::Path) -> Result<ServiceAccountJwt, KubeError> {
    std::fs::read_to_string(path)
        .map(|s| ServiceAccountJwt(s.trim().to_string()))
        .map_err(|e| KubeError::Config(format!("cannot read {}: {e}", path.display())))
}
