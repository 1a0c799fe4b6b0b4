//! Issuing one admitted pod's credentials: every dbConfig concurrently under the admission's
//! deadline (authorise, issue, reserve, record), and the undo when it fails.

use super::*;

/// The issuance of every dbConfig of one pod, under the admission's deadline. On failure, or
/// when the deadline passes with calls running, the undo log is abandoned and undone in the
/// background (paced lane, own patience); the refusal says what became of it.
pub(super) async fn issue_pod(
    deps: Arc<AdmissionDeps>,
    shared: Arc<Shared>,
    clock: Arc<ExternalClock>,
    spec: Arc<PodDbSpec>,
    facts: Arc<PodFacts>,
    deadline: tokio::time::Instant,
    log: Logger,
) -> Outcome {
    let undo_log = Arc::new(UndoLog::default());
    let mut work = {
        let (deps, undo_log, clock, spec, facts, log) = (
            deps.clone(),
            undo_log.clone(),
            clock.clone(),
            spec.clone(),
            facts.clone(),
            log.clone(),
        );
        tokio::spawn(async move {
            let owner = shared.slots.owner(spec.configs.len(), deadline);
            let jobs = spec.configs.iter().map(|db| async {
                // Waiting for a slot counts as vdbi's own time (it is vdbi's scheduling); a
                // request still queued at the deadline gives up its place.
                let Ok(_slot) = tokio::time::timeout_at(
                    deadline,
                    shared.slots.acquire(owner, SlotUser::Admission),
                )
                .await
                else {
                    return Err(Refusal::new(
                        RefusalReason::Deadline,
                        "no issuance slot free before the admission's deadline",
                    ));
                };
                issue_one(
                    &deps,
                    &shared.roles,
                    &undo_log,
                    &clock,
                    &spec,
                    db,
                    &facts,
                    deadline,
                    &log,
                )
                .await
            });
            futures::future::join_all(jobs)
                .await
                .into_iter()
                .collect::<Result<Vec<Issued>, Refusal>>()
        })
    };
    let refusal = match tokio::time::timeout_at(deadline, &mut work).await {
        Ok(Ok(Ok(issued))) => return Ok(Arc::new(issued)),
        Ok(Ok(Err(refusal))) => refusal,
        Ok(Err(join)) => {
            // The panic's text stays in the log: it is not the pod creator's to read.
            deps.metrics.process.task_panicked("admission_issue");
            warn!(log, "the issuing task failed"; "error" => %join);
            Refusal::new(RefusalReason::Internal, "internal error while issuing")
        }
        Err(_) => {
            // Say why when the cause is known: no Vault session at all is not a slow call.
            let logged_in = clock
                .external(tokio::time::timeout(
                    Duration::from_millis(200),
                    deps.vault.send(crate::actors::vault_session::IsLoggedIn),
                ))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or(true);
            if logged_in {
                Refusal::new(
                    RefusalReason::Deadline,
                    format!(
                        "Vault/Kubernetes did not answer within {:?}",
                        deps.config.admission_timeout
                    ),
                )
            } else {
                Refusal::new(
                    RefusalReason::VaultUnavailable,
                    "vdbi has no Vault session (Vault unreachable, sealed or refusing vdbi's login)",
                )
            }
        }
    };
    let (created, exposure) = undo_log.abandon();
    if !created.is_empty() {
        // A panic leaves what was created to the revoker's sweep, which finds it through the
        // reservation written before the first Vault object.
        let (task_log, task_metrics) = (log.clone(), deps.metrics.clone());
        spawn_detached(
            "admission_undo",
            &task_log,
            &task_metrics,
            async move {
                // Calls still running end by the deadline (plus the margin a provisional token
                // is given for its last call): what they create is then tied to its token.
                let limit = deadline + crate::actors::issuance::steps::PROVISIONAL_MARGIN;
                undo_log.settled(limit).await;
                undo(&deps.vault, created, &log).await;
            },
            || {},
        );
    }
    Err(refusal.with_exposure(exposure))
}

#[allow(clippy::too_many_arguments)]
async fn issue_one(
    deps: &AdmissionDeps,
    roles: &RoleCache,
    undo_log: &UndoLog,
    clock: &ExternalClock,
    spec: &PodDbSpec,
    db: &DbConfig,
    pod: &PodFacts,
    deadline: tokio::time::Instant,
    log: &Logger,
) -> Result<Issued, Refusal> {
    let cfg = &deps.config;
    let issuer = Issuer::new(cfg, &deps.vault, &deps.metrics, clock, deadline);
    let who = Subject::new(&pod.namespace, &pod.service_account);
    let refusal = |e| Refusal::from_issue(db, e, log);
    let uuid = new_uuid();
    let mut entry =
        BookkeepingEntry::reservation(&pod.namespace, &pod.service_account, &pod.name, "");
    // Whether the reservation `uuid` is written (projected mode, right after the login).
    let mut reserved = false;
    let token = if !cfg.use_projected_sa {
        // ---- legacy authorisation: vdbi's own session reads the role and checks the SA ----
        issuer.authorise(roles, db, &who).await.map_err(refusal)?;
        if cfg.nri.enabled {
            None
        } else {
            let orphan = undo_log
                .creating(issuer.orphan_token(db, &uuid, &who))
                .await
                .map_err(refusal)?;
            record(
                deps,
                undo_log,
                Created::Token(NewToken::Orphan(orphan.clone())),
                log,
            )
            .await?;
            Some(NewToken::Orphan(orphan))
        }
    } else {
        // ---- projected: the pod's own identity logs in to Vault ----
        let kube = deps.kube.as_ref().ok_or_else(|| {
            Refusal::new(
                RefusalReason::Internal,
                "no Kubernetes client for TokenRequest",
            )
        })?;
        let login = undo_log
            .creating(issuer.pod_login(kube, db, &who, None))
            .await
            .map_err(refusal)?;
        let pod_token = login.token;
        record(
            deps,
            undo_log,
            Created::Token(NewToken::Pod(pod_token.clone())),
            log,
        )
        .await?;
        // Crash consistency: the token's accessor is recorded before anything else is done with
        // it. A process killed from here on leaves this reservation, and the revoker's sweep
        // revokes that accessor (and the leases it holds) once the uuid has no pod for the grace.
        let reservation = Reservation {
            entry: entry.clone(),
            token_accessor: login.accessor,
            vault_role: db.role.clone(),
        };
        reserve(
            deps,
            undo_log,
            &issuer,
            &uuid,
            reservation,
            db,
            &pod.namespace,
            log,
        )
        .await?;
        reserved = true;
        issuer.check_period(db, &pod_token, log).await;
        if cfg.nri.enabled {
            // The NRI plugin logs in again on the node; this token is not handed on. Forgotten
            // only once revoked: the plugin's completion deletes the reservation, the only
            // other record of it, so a token still alive fails the admission (and is undone).
            let revoked = clock
                .external(deps.vault.call(RevokeSelf {
                    token: pod_token.clone(),
                    deadline,
                }))
                .await;
            if let Err(e) = revoked {
                return Err(Refusal::from_call(
                    db,
                    "revoking the admission's own login",
                    &e,
                    log,
                ));
            }
            undo_log.forget_token(&pod_token);
            None
        } else {
            Some(NewToken::Pod(pod_token))
        }
    };
    let values = match &token {
        // NRI mode: placeholders only, the plugin issues on the node.
        None => placeholders(),
        Some(NewToken::Orphan(token) | NewToken::Pod(token)) => {
            let creds = undo_log
                .creating(issuer.read_credentials(&spec.engine, db, token, READ_ATTEMPTS))
                .await
                .map_err(refusal)?;
            entry.lease_id = creds.lease_id.clone();
            entry.token_id = token.expose().to_string();
            InjectedValues {
                username: creds.username.clone(),
                password: creds.password.expose().to_string(),
            }
        }
    };
    // ---- bookkeeping, before answering ----
    if token.is_none() {
        // NRI mode: a reservation, outside the prefix vault-db-injector lists (projected: the
        // one written at the login); the NRI plugin writes the entry once it has a token and a
        // lease, then deletes the reservation.
        if !reserved {
            let reservation = Reservation::of(entry);
            reserve(
                deps,
                undo_log,
                &issuer,
                &uuid,
                reservation,
                db,
                &pod.namespace,
                log,
            )
            .await?;
        }
        return Ok(Issued { uuid, values });
    }
    undo_log
        .creating(issuer.write_entry(&uuid, entry, &pod.namespace))
        .await
        .map_err(refusal)?;
    record(
        deps,
        undo_log,
        Created::Entry {
            uuid: uuid.clone(),
            restore: Restore::Delete,
        },
        log,
    )
    .await?;
    // ---- projected: the entry records the token, the reservation is done ----
    if reserved {
        reservations::complete(&deps.vault, ReservationKind::Uuid, vec![uuid.clone()], log);
    }
    // ---- legacy: the token is recorded, it may now live its full TTL ----
    if let Some(NewToken::Orphan(token)) = &token {
        issuer.confirm_token(token).await.map_err(refusal)?;
    }
    Ok(Issued { uuid, values })
}

/// Writes the reservation `uuid` and records it in the undo log, so that a failed issuance
/// deletes it and a crashed one leaves it for the revoker's sweep.
#[allow(clippy::too_many_arguments)]
async fn reserve(
    deps: &AdmissionDeps,
    undo_log: &UndoLog,
    issuer: &Issuer<'_>,
    uuid: &str,
    reservation: Reservation,
    db: &DbConfig,
    namespace: &str,
    log: &Logger,
) -> Result<(), Refusal> {
    undo_log
        .creating(issuer.write_reservation(ReservationKind::Uuid, uuid, reservation, namespace))
        .await
        .map_err(|e| Refusal::from_issue(db, e, log))?;
    let created = Created::Reservation {
        kind: ReservationKind::Uuid,
        key: uuid.to_string(),
    };
    record(deps, undo_log, created, log).await
}

/// Records something the admission created; if the admission was already abandoned (deadline),
/// undoes it at once and ends this dbConfig's work.
async fn record(
    deps: &AdmissionDeps,
    undo_log: &UndoLog,
    created: Created,
    log: &Logger,
) -> Result<(), Refusal> {
    match undo_log.record(created) {
        Ok(()) => Ok(()),
        Err(late) => {
            undo(&deps.vault, vec![late], log).await;
            Err(Refusal::new(RefusalReason::Deadline, "abandoned"))
        }
    }
}
