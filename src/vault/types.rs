//! Typed results of the Vault operations, and lenient decoding of Vault's JSON.

use super::secret::{Secret, VaultToken};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A token issued by a login or a token creation (the `auth` block of the response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAuth {
    pub token: VaultToken,
    pub accessor: String,
    /// `lease_duration`: time to live at issuance.
    pub ttl: Duration,
    pub renewable: bool,
    /// All policies (identity + token).
    pub policies: Vec<String>,
    pub token_policies: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub entity_id: String,
    pub token_type: String,
    pub orphan: bool,
}

/// The result of a login.
pub type LoginResult = TokenAuth;

/// TTL after a token renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenTtl {
    pub accessor: String,
    pub ttl: Duration,
    pub renewable: bool,
}

/// `auth/token/lookup-self` / `lookup` (the token id itself is not kept).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    #[serde(default, deserialize_with = "null_default")]
    pub accessor: String,
    #[serde(default, deserialize_with = "null_default")]
    pub policies: Vec<String>,
    /// Remaining time to live.
    #[serde(default, deserialize_with = "secs")]
    pub ttl: Duration,
    /// Zero when the token is not periodic.
    #[serde(default, deserialize_with = "secs")]
    pub period: Duration,
    #[serde(default, deserialize_with = "secs")]
    pub creation_ttl: Duration,
    #[serde(default, deserialize_with = "secs")]
    pub explicit_max_ttl: Duration,
    #[serde(default, deserialize_with = "null_default")]
    pub renewable: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub orphan: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub display_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub num_uses: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub entity_id: String,
    #[serde(default, deserialize_with = "null_default", rename = "type")]
    pub token_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub path: String,
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub issue_time: Option<String>,
    #[serde(default)]
    pub expire_time: Option<String>,
}

/// Database credentials from `<mount>/creds/<role>`, with their lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbCredentials {
    pub username: String,
    pub password: Secret<String>,
    /// `<mount>/creds/<role>/<id>`: what `sys/leases/renew|revoke` take.
    pub lease_id: String,
    pub lease_duration: Duration,
    pub renewable: bool,
}

/// TTL after a lease renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    pub lease_id: String,
    pub ttl: Duration,
    pub renewable: bool,
}

/// `sys/leases/lookup`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LeaseInfo {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "secs")]
    pub ttl: Duration,
    #[serde(default, deserialize_with = "null_default")]
    pub renewable: bool,
    #[serde(default)]
    pub issue_time: Option<String>,
    #[serde(default)]
    pub expire_time: Option<String>,
    #[serde(default)]
    pub last_renewal: Option<String>,
}

/// `sys/health`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Health {
    #[serde(default, deserialize_with = "null_default")]
    pub initialized: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub sealed: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub standby: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub performance_standby: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub version: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub server_time_utc: i64,
}

impl Health {
    /// Initialised, unsealed and active (not a standby).
    pub fn is_active(&self) -> bool {
        self.initialized && !self.sealed && !self.standby
    }
}

/// A kubernetes auth role (`auth/<mount>/role/<name>`), list fields normalised (compat §3.7):
/// a JSON array gives its elements as strings, a scalar gives a one-element list, null or a
/// missing field an empty list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeAuthRole {
    pub bound_service_account_names: Vec<String>,
    pub bound_service_account_namespaces: Vec<String>,
    /// Label selector on namespaces (Vault ≥ 1.16 / OpenBao); empty when unused. vdbi's
    /// in-process check cannot evaluate it and only uses the namespace list.
    pub bound_service_account_namespace_selector: String,
    /// `token_policies`, or the deprecated `policies` when that is all the role has.
    pub token_policies: Vec<String>,
    pub token_period: Duration,
    pub token_ttl: Duration,
    pub token_max_ttl: Duration,
    pub token_type: String,
    /// `audience` (empty/absent: none configured).
    pub audience: Option<String>,
    pub alias_name_source: String,
}

impl KubeAuthRole {
    /// Decodes the role's `data` object.
    pub fn from_data(data: &serde_json::Map<String, Value>) -> KubeAuthRole {
        let list = |k: &str| string_list(data.get(k));
        let dur = |k: &str| data.get(k).and_then(value_secs).unwrap_or_default();
        let string = |k: &str| match data.get(k) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a.iter().map(scalar_string).collect::<Vec<_>>().join(","),
            Some(v) => scalar_string(v),
        };
        let mut token_policies = list("token_policies");
        if token_policies.is_empty() {
            token_policies = list("policies");
        }
        let mut token_period = dur("token_period");
        if token_period.is_zero() {
            token_period = dur("period");
        }
        let audience = Some(string("audience")).filter(|a| !a.is_empty());
        KubeAuthRole {
            bound_service_account_names: list("bound_service_account_names"),
            bound_service_account_namespaces: list("bound_service_account_namespaces"),
            bound_service_account_namespace_selector: string(
                "bound_service_account_namespace_selector",
            ),
            token_policies,
            token_period,
            token_ttl: dur("token_ttl"),
            token_max_ttl: dur("token_max_ttl"),
            token_type: string("token_type"),
            audience,
            alias_name_source: string("alias_name_source"),
        }
    }
}

/// A scalar as Go's `fmt.Sprint` would print it (strings unquoted).
fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Array → elements as strings; scalar → one element; null/absent → empty.
pub(crate) fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(scalar_string).collect(),
        Some(v) => vec![scalar_string(v)],
    }
}

/// Seconds as a JSON number, a numeric string, or a duration string (`"1h"`).
fn value_secs(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .or_else(|| n.as_i64().map(|_| Duration::ZERO))
            .or_else(|| n.as_f64().filter(|f| *f > 0.0).map(Duration::from_secs_f64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .map(Duration::from_secs)
                .or_else(|| humantime::parse_duration(s).ok())
        }
        _ => None,
    }
}

/// serde: seconds (see [`value_secs`]); null or unparsable → zero.
pub(crate) fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(value_secs(&v).unwrap_or_default())
}

/// serde: null → `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_role_from_real_response() {
        // OpenBao 2.7 `auth/kubernetes/role/app-rw`
        let body = r#"{"alias_name_source":"serviceaccount_uid","audience":"vault","bound_service_account_names":["app","default"],"bound_service_account_namespace_selector":"","bound_service_account_namespaces":["*"],"token_bound_cidrs":[],"token_explicit_max_ttl":0,"token_max_ttl":0,"token_no_default_policy":false,"token_num_uses":0,"token_period":86400,"token_policies":["app-rw"],"token_strictly_bind_ip":false,"token_ttl":0,"token_type":"service"}"#;
        let data: serde_json::Map<String, Value> = serde_json::from_str(body).unwrap();
        let r = KubeAuthRole::from_data(&data);
        assert_eq!(r.bound_service_account_names, vec!["app", "default"]);
        assert_eq!(r.bound_service_account_namespaces, vec!["*"]);
        assert_eq!(r.token_policies, vec!["app-rw"]);
        assert_eq!(r.token_period, Duration::from_secs(86400));
        assert_eq!(r.audience.as_deref(), Some("vault"));
        assert_eq!(r.token_type, "service");
        assert_eq!(r.bound_service_account_namespace_selector, "");
    }

    #[test]
    fn kube_role_scalars_and_legacy_fields() {
        let body = r#"{"bound_service_account_names":"app","bound_service_account_namespaces":null,"policies":["p"],"period":"1h","audience":""}"#;
        let data: serde_json::Map<String, Value> = serde_json::from_str(body).unwrap();
        let r = KubeAuthRole::from_data(&data);
        assert_eq!(r.bound_service_account_names, vec!["app"]);
        assert!(r.bound_service_account_namespaces.is_empty());
        assert_eq!(r.token_policies, vec!["p"]);
        assert_eq!(r.token_period, Duration::from_secs(3600));
        assert_eq!(r.audience, None);
        assert_eq!(
            string_list(Some(&serde_json::json!([1, true, "x"]))),
            vec!["1", "true", "x"]
        );
    }

    #[test]
    fn token_info_from_real_lookup() {
        // OpenBao 2.7 lookup-self of a periodic orphan token (id removed)
        let body = r#"{"accessor":"abc","creation_time":1795420000,"creation_ttl":3600,"display_name":"token-injector-orphan-token","entity_id":"","expire_time":"2026-11-22T10:00:00Z","explicit_max_ttl":0,"id":"s.x","issue_time":"2026-11-22T09:00:00Z","meta":null,"num_uses":0,"orphan":true,"path":"auth/token/create-orphan","period":3600,"policies":["app-rw","default"],"renewable":true,"ttl":3599,"type":"service"}"#;
        let i: TokenInfo = serde_json::from_str(body).unwrap();
        assert_eq!(i.period, Duration::from_secs(3600));
        assert_eq!(i.ttl, Duration::from_secs(3599));
        assert!(i.orphan && i.renewable);
        assert!(i.meta.is_empty());
        assert_eq!(i.token_type, "service");
        // root token: no period, ttl 0, expire_time null
        let root = r#"{"accessor":"r","policies":["root"],"ttl":0,"expire_time":null,"meta":null}"#;
        let i: TokenInfo = serde_json::from_str(root).unwrap();
        assert!(i.period.is_zero() && i.ttl.is_zero() && i.expire_time.is_none());
    }

    #[test]
    fn health_from_sealed_body() {
        let body = r#"{"initialized":true,"sealed":true,"standby":true,"replication_performance_mode":"unknown","replication_dr_mode":"unknown","server_time_utc":1795420685,"version":"2.7.2"}"#;
        let h: Health = serde_json::from_str(body).unwrap();
        assert!(h.sealed && h.initialized && !h.is_active());
    }
}
