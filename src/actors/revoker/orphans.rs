//! Orphan-lease discovery: database leases Vault holds under the release's roles that no
//! bookkeeping entry records.

use super::sweep::SweepEnv;
use super::{OrphanReport, Revoker};
use crate::actors::error::ActorError;
use crate::actors::vault_session::{ListLeases, LookupLease, RevokeLease};
use crate::config::OrphanLeaseMode;
use actix::prelude::*;
use futures::StreamExt;
use slog::{info, warn};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

/// Bookkeeping entries orphan discovery reads per pass.
pub const ORPHAN_READS_PER_PASS: usize = 256;

/// What orphan discovery remembers between sweeps.
#[derive(Default)]
pub(super) struct OrphanState {
    /// uuid → lease id recorded in its entry ("" when none yet: re-read every pass, an NRI
    /// reservation gets its lease later).
    entry_leases: HashMap<String, String>,
    /// `(mount, role)` of the leases recorded in entries.
    roles: BTreeSet<(String, String)>,
    /// Issue time of leases without entry (looked up once).
    issued: HashMap<String, SystemTime>,
    /// Orphan leases already counted.
    reported: HashSet<String>,
    /// Listing leases was refused: no discovery until the next leadership term.
    pub(super) denied: bool,
}

impl Revoker {
    pub(super) fn discover(&mut self) -> ResponseActFuture<Self, Result<OrphanReport, ActorError>> {
        if !self.leading || self.cfg.orphan_mode == OrphanLeaseMode::Off {
            return Box::pin(fut::ready(Ok(OrphanReport::default())));
        }
        let Some(mut orphans) = self.orphans.take() else {
            return Box::pin(fut::ready(Err(ActorError::Busy(
                "an orphan-discovery pass",
            ))));
        };
        let env = self.env();
        Box::pin(
            async move {
                let res = discover_orphans(&env, &mut orphans).await;
                (res, orphans)
            }
            .into_actor(self)
            .map(|(res, orphans), act, _| {
                act.orphans = Some(orphans);
                res
            }),
        )
    }
}

/// `(mount, role)` of a lease id `<mount>/creds/<role>/<id>` (the mount may contain `/`).
pub fn lease_role(lease_id: &str) -> Option<(String, String)> {
    let (path, _id) = lease_id.rsplit_once('/')?;
    let (mount_creds, role) = path.rsplit_once('/')?;
    let mount = mount_creds.strip_suffix("/creds")?;
    (!mount.is_empty() && !role.is_empty()).then(|| (mount.to_string(), role.to_string()))
}

/// Lists the lease ids Vault holds under the roles orphan discovery examines. `None` when the
/// listing is impossible (not permitted: logged once per leadership term).
async fn list_managed_leases(env: &SweepEnv, orphans: &mut OrphanState) -> Option<Vec<String>> {
    let roles: BTreeSet<(String, String)> = if env.cfg.orphan_roles.is_empty() {
        orphans.roles.clone()
    } else {
        env.cfg.orphan_roles.iter().cloned().collect()
    };
    let mut out = Vec::new();
    for (mount, role) in roles {
        let prefix = format!("{mount}/creds/{role}/");
        let res = env
            .call(|deadline| ListLeases {
                prefix: prefix.clone(),
                deadline,
            })
            .await;
        match res {
            Ok(keys) => out.extend(
                keys.into_iter()
                    .filter(|k| !k.ends_with('/'))
                    .map(|k| format!("{prefix}{k}")),
            ),
            Err(e) if e.vault().is_some_and(|v| v.is_permission_denied()) => {
                orphans.denied = true;
                warn!(env.log, "orphan-lease discovery needs `list` and `sudo` on sys/leases/lookup/<mount>/creds/* (and `update` on sys/leases/revoke to revoke); off until the next leadership term";
                    "prefix" => &prefix);
                return None;
            }
            Err(e) => {
                warn!(env.log, "cannot list leases; orphan discovery skipped this sweep"; "prefix" => &prefix, "error" => %e);
                return None;
            }
        }
    }
    Some(out)
}

/// One discovery pass: lists Vault's leases under the examined roles *before* the bookkeeping
/// entries (a lease issued and recorded meanwhile is then seen recorded), learns the lease of
/// entries not read yet, and counts (in `revoke` mode also revokes) the unrecorded leases older
/// than the grace.
async fn discover_orphans(
    env: &SweepEnv,
    orphans: &mut OrphanState,
) -> Result<OrphanReport, ActorError> {
    if orphans.denied {
        return Ok(OrphanReport::default());
    }
    let Some(listed) = list_managed_leases(env, orphans).await else {
        return Ok(OrphanReport::default());
    };
    let uuids = env.kv_list().await?;
    // Learn the lease of entries not read yet (and of those without one yet), within budget.
    let listed_uuids: HashSet<&String> = uuids.iter().collect();
    orphans.entry_leases.retain(|u, _| listed_uuids.contains(u));
    let mut unknown: Vec<String> = uuids
        .iter()
        .filter(|u| orphans.entry_leases.get(*u).is_none_or(|l| l.is_empty()))
        .cloned()
        .collect();
    let over_budget = unknown.len().saturating_sub(ORPHAN_READS_PER_PASS);
    unknown.truncate(ORPHAN_READS_PER_PASS);
    let reads = futures::stream::iter(unknown)
        .map(|uuid| async move {
            let e = env.kv_get(&uuid).await;
            (uuid, e)
        })
        .buffer_unordered(env.cfg.max_concurrent.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut failed = 0;
    for (uuid, e) in reads {
        match e {
            Ok(Some(e)) => {
                if let Some(r) = lease_role(&e.lease_id) {
                    orphans.roles.insert(r);
                }
                orphans.entry_leases.insert(uuid, e.lease_id);
            }
            Ok(None) => {}
            Err(e) => {
                failed += 1;
                warn!(env.log, "orphan discovery cannot read entry"; "uuid" => &uuid, "error" => %e);
            }
        }
    }
    let mut report = OrphanReport {
        leases: listed.len(),
        unknown_entries: over_budget + failed,
        ..Default::default()
    };
    if report.unknown_entries > 0 {
        // Some entries are unknown: any listed lease may be theirs. Decide nothing this time.
        return Ok(report);
    }
    let recorded: HashSet<&String> = orphans.entry_leases.values().collect();
    let candidates: Vec<String> = listed
        .iter()
        .filter(|l| !recorded.contains(l))
        .cloned()
        .collect();
    let listed_set: HashSet<&String> = listed.iter().collect();
    orphans.issued.retain(|l, _| listed_set.contains(l));
    orphans.reported.retain(|l| listed_set.contains(l));
    let now = SystemTime::now();
    for lease in candidates {
        let issued = match orphans.issued.get(&lease) {
            Some(t) => *t,
            None => {
                let lease_id = lease.clone();
                let info = env
                    .call(|deadline| LookupLease { lease_id, deadline })
                    .await;
                match info {
                    Ok(Some(info)) => {
                        let Some(t) = info
                            .issue_time
                            .as_deref()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(SystemTime::from)
                        else {
                            continue;
                        };
                        orphans.issued.insert(lease.clone(), t);
                        t
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(env.log, "cannot look up lease"; "lease" => &lease, "error" => %e);
                        continue;
                    }
                }
            }
        };
        let age = now.duration_since(issued).unwrap_or_default();
        if age < env.cfg.orphan_grace {
            continue;
        }
        report.orphans += 1;
        if orphans.reported.insert(lease.clone()) {
            env.metrics.revocation.orphan_lease_found();
            warn!(env.log, "database lease without bookkeeping entry"; "lease" => &lease,
                "age_s" => age.as_secs(), "action" => env.cfg.orphan_mode.as_str());
        }
        if env.cfg.orphan_mode == OrphanLeaseMode::Revoke {
            let lease_id = lease.clone();
            let res = env
                .call(|deadline| RevokeLease { lease_id, deadline })
                .await;
            match res {
                Ok(()) => {
                    report.revoked += 1;
                    env.metrics.revocation.orphan_lease_revoked();
                    orphans.issued.remove(&lease);
                    orphans.reported.remove(&lease);
                    info!(env.log, "orphan database lease revoked"; "lease" => &lease);
                }
                Err(e) => {
                    warn!(env.log, "cannot revoke orphan lease"; "lease" => &lease, "error" => %e)
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::lease_role;

    #[test]
    fn lease_roles_are_parsed_from_lease_ids() {
        assert_eq!(
            lease_role("databases/creds/app-rw/AbC123"),
            Some(("databases".into(), "app-rw".into()))
        );
        assert_eq!(
            lease_role("team/db/creds/reporting/x"),
            Some(("team/db".into(), "reporting".into()))
        );
        assert_eq!(lease_role("kv/data/x"), None);
        assert_eq!(lease_role("creds/role/x"), None);
        assert_eq!(lease_role(""), None);
    }
}
