//! What vdbi left in Vault and PostgreSQL, counted from the outside (root token and the
//! PostgreSQL admin, for counting only) and without cleaning anything first: KV entries under
//! every bookkeeping prefix (data, or metadata only), live tokens vdbi issued (legacy) or logged
//! in with (projected) for the run's pods, leases of the run's database role, and the role's PostgreSQL users.

use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use vdbi_testkit::platform::{Platform, VaultRoot};

/// Display name Vault gives the orphan tokens vdbi issues for pods (`token-` + vdbi's
/// `injector-orphan-token`, as vault-db-injector's).
const ORPHAN_TOKEN_DISPLAY_NAME: &str = "token-injector-orphan-token";
/// Token metadata vdbi puts on the tokens it issues for a pod: the pod's namespace.
const TOKEN_META_NAMESPACE: &str = "vdbi-namespace";

/// Every KV prefix vdbi writes under for a `vaultSecretPrefix`, as docs/reliability.md lists
/// them: the bookkeeping prefix itself, its `-reservations` sibling (reservations,
/// `vdbi::bookkeeping::reservation_prefix`) and its `-attempts` sibling (the NRI plugin's fetch
/// attempts, `vdbi::bookkeeping::attempt_prefix`). One place: extend it when vdbi gains another.
pub fn kv_prefixes(prefix: &str) -> Vec<String> {
    let p = prefix.trim_matches('/');
    vec![
        p.to_string(),
        vdbi::bookkeeping::reservation_prefix(p),
        vdbi::bookkeeping::attempt_prefix(p),
    ]
}

/// The counts (all but `pg_roles_vault_orphaned` and the informational login tokens must be 0).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counted {
    /// KV keys (under every prefix of [`kv_prefixes`]) whose current version has data.
    pub kv_entries: usize,
    /// KV keys with metadata but no readable data (deleted or destroyed current version).
    pub kv_metadata_only: usize,
    /// Live tokens with vdbi's orphan-token display name issued for the run's namespace (token
    /// metadata) or carrying the run's role policy.
    pub tokens: usize,
    /// Leases Vault holds under `<db mount>/creds/<role>/`.
    pub leases: usize,
    /// PostgreSQL users of the run's role (`v-...-<role>-...`) while Vault holds a lease that
    /// may account for them.
    pub pg_roles: usize,
    /// PostgreSQL users of the run's role beyond the leases Vault holds: no lease, so neither
    /// vdbi nor Vault will ever drop them (Vault lost the lease; see docs/reliability.md).
    pub pg_roles_vault_orphaned: usize,
    /// Informational: live Vault login tokens of vdbi's own processes (a killed process cannot
    /// revoke its own; they end at their TTL).
    pub vdbi_login_tokens: usize,
    /// Projected mode, apart: pod-login tokens of the run's role created within
    /// [`LOGIN_WINDOW_S`] of an injector kill or an OpenBao kill — logins Vault completed whose
    /// answer vdbi never recorded (docs/reliability.md, "Recorded before use"). Such a token
    /// holds no lease (leases are counted, and must be 0); it ends at its period. Any other
    /// pod-login token of the role counts in `tokens`.
    pub pod_logins_unrecorded: usize,
    /// Apart: pod tokens whose revocation was cut short (the revoking process killed during
    /// `revoke-orphan`): Vault keeps them marked "revocation pending" (`num_uses: -1`) and
    /// refuses every use of them; their leases, if any, are counted in `leases`.
    pub tokens_revocation_pending: usize,
}

/// How close (s) to a kill a pod-login token must have been created to count as one whose
/// answer the killed side never got (`creation_time` has whole seconds).
pub const LOGIN_WINDOW_S: i64 = 2;

impl Counted {
    /// What fails the run: everything but the Vault-orphaned PostgreSQL users and the login
    /// tokens of killed processes.
    pub fn total(&self) -> usize {
        self.kv_entries + self.kv_metadata_only + self.tokens + self.leases + self.pg_roles
    }

    pub fn rows(&self) -> Vec<(String, String)> {
        vec![
            (
                "leftover KV entries / metadata-only".into(),
                format!("{} / {}", self.kv_entries, self.kv_metadata_only),
            ),
            (
                "leftover tokens / leases / PG roles".into(),
                format!("{} / {} / {}", self.tokens, self.leases, self.pg_roles),
            ),
            (
                "PG roles Vault orphaned (apart)".into(),
                self.pg_roles_vault_orphaned.to_string(),
            ),
            (
                "vdbi's own login tokens alive (info)".into(),
                self.vdbi_login_tokens.to_string(),
            ),
            (
                "pod logins never recorded, at a kill (apart)".into(),
                self.pod_logins_unrecorded.to_string(),
            ),
            (
                "pod tokens pending revocation, unusable (apart)".into(),
                self.tokens_revocation_pending.to_string(),
            ),
        ]
    }
}

/// What to count.
pub struct Scope<'a> {
    pub kv_mount: &'a str,
    /// `vaultSecretPrefix` ([`kv_prefixes`] of it are counted).
    pub prefix: &'a str,
    pub db_mount: &'a str,
    /// The run's own database role (also its token policy).
    pub role: &'a str,
    /// The namespace of the run's pods.
    pub pod_namespace: &'a str,
    /// The namespace of vdbi's ServiceAccounts (its login tokens' display names).
    pub vdbi_namespace: &'a str,
    /// Unix times (s) of the kills that may cut a pod login short (injector, OpenBao).
    pub kills: &'a [i64],
}

fn list() -> Method {
    Method::from_bytes(b"LIST").expect("LIST")
}

fn keys(body: &serde_json::Value) -> Vec<String> {
    body["data"]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

/// A Vault LIST; a 404 is an empty list, anything else but 200 an error.
async fn vault_list(root: &VaultRoot, path: &str) -> Result<Vec<String>, String> {
    let r = root.request(list(), path, None).await;
    match r.status.as_u16() {
        200 => Ok(keys(&r.body)),
        404 => Ok(Vec::new()),
        s => Err(format!("LIST {path}: {s}")),
    }
}

/// (with data, metadata only) under `<kv>/<prefix>`.
async fn kv_count(root: &VaultRoot, kv: &str, prefix: &str) -> Result<(usize, usize), String> {
    let ks = vault_list(root, &format!("{kv}/metadata/{prefix}")).await?;
    let reads = futures::stream::iter(ks.into_iter().map(|k| async move {
        root.request(Method::GET, &format!("{kv}/data/{prefix}/{k}"), None)
            .await
            .status
            .as_u16()
    }))
    .buffer_unordered(16)
    .collect::<Vec<u16>>()
    .await;
    let mut out = (0, 0);
    for s in reads {
        match s {
            200 => out.0 += 1,
            404 => out.1 += 1,
            s => return Err(format!("KV read under {prefix}: {s}")),
        }
    }
    Ok(out)
}

/// (pod tokens, vdbi login tokens, pod logins unrecorded at a kill) alive, through the accessor
/// list. Pod tokens: legacy orphan tokens, and projected pod logins (display name
/// `kubernetes-<pod namespace>-…` with the run's role policy).
async fn tokens(root: &VaultRoot, s: &Scope<'_>) -> Result<TokenCounts, String> {
    let accessors = vault_list(root, "auth/token/accessors").await?;
    let login_prefix = format!("kubernetes-{}-", s.vdbi_namespace);
    let pod_login_prefix = format!("kubernetes-{}-", s.pod_namespace);
    let looked = futures::stream::iter(accessors.into_iter().map(|a| async move {
        root.request(
            Method::POST,
            "auth/token/lookup-accessor",
            Some(&json!({ "accessor": a })),
        )
        .await
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    let mut out = TokenCounts::default();
    for r in looked {
        // A token revoked between the list and the lookup answers 400: gone.
        if r.status != 200 {
            continue;
        }
        let d = &r.body["data"];
        let pending = d["num_uses"] == -1;
        let name = d["display_name"].as_str().unwrap_or_default();
        let ns = d["meta"][TOKEN_META_NAMESPACE].as_str().unwrap_or_default();
        let has_role = d["policies"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p == s.role));
        let pod_token = (name == ORPHAN_TOKEN_DISPLAY_NAME && (ns == s.pod_namespace || has_role))
            || (name.starts_with(&pod_login_prefix) && has_role);
        if pod_token && pending {
            out.revocation_pending += 1;
        } else if name == ORPHAN_TOKEN_DISPLAY_NAME && pod_token {
            out.alive += 1;
        } else if pod_token {
            let created = d["creation_time"].as_i64().unwrap_or_default();
            if s.kills
                .iter()
                .any(|k| (created - k).abs() <= LOGIN_WINDOW_S)
            {
                out.unrecorded += 1;
            } else {
                out.alive += 1;
            }
        } else if name.starts_with(&login_prefix) {
            out.vdbi_logins += 1;
        }
    }
    Ok(out)
}

/// The live tokens [`tokens`] finds, by kind (see [`Counted`]).
#[derive(Default)]
struct TokenCounts {
    alive: usize,
    vdbi_logins: usize,
    unrecorded: usize,
    revocation_pending: usize,
}

/// PostgreSQL users vault created for `role` (the default username template puts the role's
/// first 8 characters after the display name's: `v-<display8>-<role8>-<random>-<time>`).
async fn pg_users(p: &Platform, role: &str) -> Result<usize, String> {
    let conn = format!(
        "host={} port={} dbname={} user={} password={} connect_timeout=5",
        p.var("VDBI_PG_HOST"),
        p.var("VDBI_PG_PORT"),
        p.var("VDBI_PG_DATABASE"),
        p.var("VDBI_PG_ADMIN_USER"),
        p.var("VDBI_PG_ADMIN_PASSWORD"),
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    let task = tokio::spawn(connection);
    let role8: String = role.chars().take(8).collect();
    let rows = client
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%' AND position($1 in rolname) > 0",
            &[&format!("-{role8}-")],
        )
        .await
        .map_err(|e| format!("PostgreSQL: {e}"));
    drop(client);
    task.abort();
    Ok(rows?.len())
}

/// Counts everything of [`Counted`]. An error means a count could not be made (a component
/// down): the caller retries.
pub async fn count(p: &Platform, root: &VaultRoot, s: &Scope<'_>) -> Result<Counted, String> {
    let mut c = Counted::default();
    for prefix in kv_prefixes(s.prefix) {
        let (data, meta) = kv_count(root, s.kv_mount, &prefix).await?;
        c.kv_entries += data;
        c.kv_metadata_only += meta;
    }
    let t = tokens(root, s).await?;
    c.tokens = t.alive;
    c.vdbi_login_tokens = t.vdbi_logins;
    c.pod_logins_unrecorded = t.unrecorded;
    c.tokens_revocation_pending = t.revocation_pending;
    c.leases = vault_list(
        root,
        &format!("sys/leases/lookup/{}/creds/{}/", s.db_mount, s.role),
    )
    .await?
    .len();
    let users = pg_users(p, s.role).await?;
    c.pg_roles = users.min(c.leases);
    c.pg_roles_vault_orphaned = users.saturating_sub(c.leases);
    Ok(c)
}
