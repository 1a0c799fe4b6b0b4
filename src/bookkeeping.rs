//! The KV v2 bookkeeping entry (compat §3.6): one per issued credential, at
//! `<vaultSecretName>/data/<vaultSecretPrefix>/<uuid>`, whose `data` holds exactly the string
//! keys `LeaseId`, `TokenId`, `Namespace`, `ServiceAccountName`, `PodName`, `NodeName` ("do not
//! rename": entries written by vault-db-injector must keep working, and the reverse).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The `data` map of a KV v2 entry.
pub type KvData = serde_json::Map<String, Value>;

pub const KEY_LEASE_ID: &str = "LeaseId";
pub const KEY_TOKEN_ID: &str = "TokenId";
pub const KEY_NAMESPACE: &str = "Namespace";
pub const KEY_SERVICE_ACCOUNT_NAME: &str = "ServiceAccountName";
pub const KEY_POD_NAME: &str = "PodName";
pub const KEY_NODE_NAME: &str = "NodeName";

/// One bookkeeping entry. `token_id` is the raw Vault token (as vault-db-injector stores it);
/// `Debug` masks it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookkeepingEntry {
    #[serde(rename = "LeaseId", default)]
    pub lease_id: String,
    #[serde(rename = "TokenId", default)]
    pub token_id: String,
    #[serde(rename = "Namespace", default)]
    pub namespace: String,
    #[serde(rename = "ServiceAccountName", default)]
    pub service_account_name: String,
    #[serde(rename = "PodName", default)]
    pub pod_name: String,
    #[serde(rename = "NodeName", default)]
    pub node_name: String,
}

impl fmt::Debug for BookkeepingEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BookkeepingEntry")
            .field("lease_id", &self.lease_id)
            .field(
                "token_id",
                &if self.token_id.is_empty() { "" } else { "***" },
            )
            .field("namespace", &self.namespace)
            .field("service_account_name", &self.service_account_name)
            .field("pod_name", &self.pod_name)
            .field("node_name", &self.node_name)
            .finish()
    }
}

impl BookkeepingEntry {
    /// An entry naming the pod, without token nor lease yet: what an issuance fills in, and
    /// what the webhook reserves in NRI mode.
    pub fn reservation(
        namespace: &str,
        service_account_name: &str,
        pod_name: &str,
        node_name: &str,
    ) -> BookkeepingEntry {
        BookkeepingEntry {
            lease_id: String::new(),
            token_id: String::new(),
            namespace: namespace.to_string(),
            service_account_name: service_account_name.to_string(),
            pod_name: pod_name.to_string(),
            node_name: node_name.to_string(),
        }
    }

    /// The KV `data` map: the six keys, all strings (empty ones included, as the Go version
    /// writes `PodName`/`NodeName` empty at issuance).
    pub fn to_map(&self) -> KvData {
        let mut m = KvData::new();
        for (k, v) in [
            (KEY_LEASE_ID, &self.lease_id),
            (KEY_TOKEN_ID, &self.token_id),
            (KEY_NAMESPACE, &self.namespace),
            (KEY_SERVICE_ACCOUNT_NAME, &self.service_account_name),
            (KEY_POD_NAME, &self.pod_name),
            (KEY_NODE_NAME, &self.node_name),
        ] {
            m.insert(k.to_string(), Value::String(v.clone()));
        }
        m
    }

    /// Reads an entry leniently: a missing key is empty, a non-string scalar is printed, other
    /// keys are ignored.
    pub fn from_map(m: &KvData) -> BookkeepingEntry {
        let get = |k: &str| match m.get(k) {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => String::new(),
        };
        BookkeepingEntry {
            lease_id: get(KEY_LEASE_ID),
            token_id: get(KEY_TOKEN_ID),
            namespace: get(KEY_NAMESPACE),
            service_account_name: get(KEY_SERVICE_ACCOUNT_NAME),
            pod_name: get(KEY_POD_NAME),
            node_name: get(KEY_NODE_NAME),
        }
    }

    /// Compat §3.5 backfill: the renewer rewrites entries that lack the service account, the
    /// node or the pod name.
    pub fn needs_backfill(&self) -> bool {
        self.service_account_name.is_empty()
            || self.node_name.is_empty()
            || self.pod_name.is_empty()
    }
}

/// Reservation-only keys (vdbi's own; vault-db-injector never lists reservations).
pub const KEY_TOKEN_ACCESSOR: &str = "TokenAccessor";
pub const KEY_VAULT_ROLE: &str = "VaultRole";

/// A reservation (`<prefix>-reservations/<uuid>`): the pod the uuid is for and, in projected
/// mode, the accessor of the pod token vdbi logged in with (never the token itself), so that
/// the revoker's sweep can revoke that one token if the issuance dies before writing its entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// The pod (namespace, service account, name, node); token and lease empty.
    pub entry: BookkeepingEntry,
    /// Accessor of the pod token (projected mode), empty when there is none yet.
    pub token_accessor: String,
    /// The Vault role the pod token logged in as (checked against the token's metadata).
    pub vault_role: String,
}

impl Reservation {
    /// A reservation naming the pod only (NRI mode's webhook).
    pub fn of(entry: BookkeepingEntry) -> Reservation {
        Reservation {
            entry,
            ..Default::default()
        }
    }

    /// The KV `data` map: the entry's six keys, plus the accessor and the role.
    pub fn to_map(&self) -> KvData {
        let mut m = self.entry.to_map();
        m.insert(
            KEY_TOKEN_ACCESSOR.to_string(),
            Value::String(self.token_accessor.clone()),
        );
        m.insert(
            KEY_VAULT_ROLE.to_string(),
            Value::String(self.vault_role.clone()),
        );
        m
    }

    /// Reads a reservation leniently (as [`BookkeepingEntry::from_map`]).
    pub fn from_map(m: &KvData) -> Reservation {
        let get = |k: &str| match m.get(k) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        Reservation {
            entry: BookkeepingEntry::from_map(m),
            token_accessor: get(KEY_TOKEN_ACCESSOR),
            vault_role: get(KEY_VAULT_ROLE),
        }
    }
}

/// `<prefix>/<uuid>`: the entry's path inside the KV mount (slashes around `prefix` trimmed).
pub fn entry_path(prefix: &str, uuid: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        uuid.to_string()
    } else {
        format!("{prefix}/{uuid}")
    }
}

/// Suffix of the reservations prefix (see [`reservation_prefix`]).
pub const RESERVATIONS_SUFFIX: &str = "-reservations";

/// `<prefix>-reservations`: where vdbi keeps entries that have no real `TokenId`/`LeaseId`
/// yet (the webhook's reservation in NRI mode). It is a *sibling* of the bookkeeping prefix,
/// not a folder inside it: vault-db-injector's renewer and revoker `LIST <mount>/metadata/<prefix>`
/// and read every key listed (a folder key included, which fails their cycle), so nothing they
/// list may lack a token or a lease. The prefix is never empty (`vaultSecretPrefix` is
/// required), so the sibling is never listed by them.
pub fn reservation_prefix(prefix: &str) -> String {
    format!("{}{RESERVATIONS_SUFFIX}", prefix.trim_matches('/'))
}

/// `<prefix>-reservations/<uuid>`: a reservation's path inside the KV mount.
pub fn reservation_path(prefix: &str, uuid: &str) -> String {
    entry_path(&reservation_prefix(prefix), uuid)
}

/// Suffix of the attempts prefix (see [`attempt_prefix`]).
pub const ATTEMPTS_SUFFIX: &str = "-attempts";

/// `<prefix>-attempts`: one record per NRI fetch attempt in projected mode (the accessor of the
/// pod token the plugin just logged in with), a sibling of the reservations. Several attempts of
/// one uuid may exist at once (a plugin killed mid-fetch fetches again after its restart), so
/// each has its own key ([`attempt_key`]).
pub fn attempt_prefix(prefix: &str) -> String {
    format!("{}{ATTEMPTS_SUFFIX}", prefix.trim_matches('/'))
}

/// Which kind of reservation a key names, and so where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationKind {
    /// `<prefix>-reservations/<uuid>`: the webhook's, one per uuid.
    Uuid,
    /// `<prefix>-attempts/<uuid>.<attempt>`: one NRI fetch attempt's (projected mode).
    Attempt,
}

impl ReservationKind {
    /// The folder of this kind's records inside the KV mount.
    pub fn folder(self, prefix: &str) -> String {
        match self {
            ReservationKind::Uuid => reservation_prefix(prefix),
            ReservationKind::Attempt => attempt_prefix(prefix),
        }
    }

    /// The path of the record `key` inside the KV mount.
    pub fn path(self, prefix: &str, key: &str) -> String {
        entry_path(&self.folder(prefix), key)
    }
}

/// Length of an attempt id (lowercase hex).
const ATTEMPT_ID_LEN: usize = 16;

/// `<uuid>.<16 hex>`: a new attempt key for `uuid` (random id).
pub fn new_attempt_key(uuid: &str) -> String {
    format!("{uuid}.{:016x}", rand::random::<u64>())
}

/// The uuid an attempt key is for; `None` when `key` is not shaped as [`new_attempt_key`]'s
/// (the id is the part after the *last* dot, so uuids may hold dots).
pub fn attempt_uuid(key: &str) -> Option<&str> {
    let (uuid, id) = key.rsplit_once('.')?;
    let hex = id.len() == ATTEMPT_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    (hex && is_valid_key(uuid)).then_some(uuid)
}

/// Is `key` usable as an entry key (one path segment: no `/`, not `.`/`..`, no whitespace or
/// control character)? Keys come from pod annotations, so check before building a path.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && !key
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

/// The entry keys of a `LIST <mount>/metadata/<prefix>` answer: sub-folders (`x/`) and invalid
/// keys are dropped.
pub fn entry_keys(listed: Vec<String>) -> Vec<String> {
    listed.into_iter().filter(|k| is_valid_key(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BookkeepingEntry {
        BookkeepingEntry {
            lease_id: "databases/creds/app-rw/abc".into(),
            token_id: "hvs.secret-token".into(),
            namespace: "prod".into(),
            service_account_name: "app".into(),
            pod_name: String::new(),
            node_name: String::new(),
        }
    }

    #[test]
    fn serialises_with_exactly_the_go_keys() {
        let v = serde_json::to_value(sample()).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "LeaseId",
                "Namespace",
                "NodeName",
                "PodName",
                "ServiceAccountName",
                "TokenId"
            ]
        );
        assert!(obj.values().all(Value::is_string));
        assert_eq!(obj["TokenId"], "hvs.secret-token");
        assert_eq!(Value::Object(sample().to_map()), v);
    }

    #[test]
    fn reads_go_written_entries() {
        // the `data.data` of an entry written by vault-db-injector 3.2 (extra key ignored)
        let go = r#"{"LeaseId":"databases/creds/app-rw/xyz","TokenId":"s.abc","Namespace":"ns","ServiceAccountName":"sa","PodName":"p-1","NodeName":"n-1","Extra":"x"}"#;
        let m: KvData = serde_json::from_str(go).unwrap();
        let e = BookkeepingEntry::from_map(&m);
        assert_eq!(e.lease_id, "databases/creds/app-rw/xyz");
        assert_eq!(e.token_id, "s.abc");
        assert_eq!(e.pod_name, "p-1");
        assert!(!e.needs_backfill());
        let typed: BookkeepingEntry = serde_json::from_str(go).unwrap();
        assert_eq!(typed, e);
        // missing and odd values
        let m: KvData = serde_json::from_str(r#"{"LeaseId":null,"TokenId":5}"#).unwrap();
        let e = BookkeepingEntry::from_map(&m);
        assert_eq!((e.lease_id.as_str(), e.token_id.as_str()), ("", "5"));
        assert!(e.needs_backfill());
        assert_eq!(BookkeepingEntry::from_map(&sample().to_map()), sample());
    }

    #[test]
    fn reservations_keep_the_accessor_and_never_a_token() {
        let r = Reservation {
            entry: BookkeepingEntry::reservation("ns", "app", "p", ""),
            token_accessor: "acc-1".into(),
            vault_role: "app-rw".into(),
        };
        let m = r.to_map();
        assert_eq!(m["TokenAccessor"], "acc-1");
        assert_eq!(m["TokenId"], "");
        assert_eq!(Reservation::from_map(&m), r);
        // an NRI-mode reservation written before the accessor key existed
        let old = BookkeepingEntry::reservation("ns", "app", "p", "n").to_map();
        assert_eq!(Reservation::from_map(&old).token_accessor, "");
    }

    #[test]
    fn debug_masks_the_token() {
        let d = format!("{:?}", sample());
        assert!(!d.contains("hvs.secret-token"), "{d}");
        assert!(d.contains("token_id: \"***\""), "{d}");
    }

    #[test]
    fn paths_and_keys() {
        assert_eq!(entry_path("kubernetes", "0b9e-11"), "kubernetes/0b9e-11");
        assert_eq!(entry_path("/kubernetes/", "u"), "kubernetes/u");
        assert_eq!(entry_path("", "u"), "u");
        assert_eq!(
            reservation_path("/kubernetes/", "u"),
            "kubernetes-reservations/u"
        );
        // a sibling of the Go-listed prefix, never inside it
        assert!(!reservation_path("a/b", "u").starts_with("a/b/"));
        assert!(is_valid_key("6f2c1a2e-9c4b-11ef-8000-0242ac120002"));
        for bad in ["", ".", "..", "a/b", "a b", "a\nb"] {
            assert!(!is_valid_key(bad), "{bad:?}");
        }
        assert_eq!(
            entry_keys(vec!["a".into(), "sub/".into(), "b".into()]),
            vec!["a", "b"]
        );
    }

    #[test]
    fn attempt_keys_name_their_uuid_and_live_beside_the_reservations() {
        let key = new_attempt_key("6f2c.1a");
        assert!(is_valid_key(&key), "{key}");
        assert_eq!(attempt_uuid(&key), Some("6f2c.1a"));
        assert_ne!(new_attempt_key("u"), new_attempt_key("u"));
        for not_an_attempt in ["u", "u.", ".0123456789abcdef", "u.0123456789ABCDEF", "u.12"] {
            assert_eq!(attempt_uuid(not_an_attempt), None, "{not_an_attempt:?}");
        }
        assert_eq!(
            ReservationKind::Attempt.path("/kubernetes/", "u.0123456789abcdef"),
            "kubernetes-attempts/u.0123456789abcdef"
        );
        assert_eq!(
            ReservationKind::Uuid.path("kubernetes", "u"),
            reservation_path("kubernetes", "u")
        );
        // neither is listed by vault-db-injector (inside its prefix)
        assert!(!ReservationKind::Attempt.folder("a/b").starts_with("a/b/"));
    }
}
