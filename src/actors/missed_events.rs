//! Pod events a standing-by duty must not forget: deletions (and, when finished pods lose their
//! credentials, Succeeded/Failed transitions) reported while the replica did not lead — a peer
//! leading at the time may have died before acting on them, or the replica's own lease lapsed
//! during an apiserver outage while its watch re-listed. The revoker acts on them when it (re)gains
//! the lease; revoking what a peer already revoked is a no-op.
//!
//! Bounded: events older than [`MISSED_RETENTION`] are dropped (the sweep catches any entry whose
//! pod is gone anyway), and at most [`MISSED_CAPACITY`] pods are remembered (the oldest go first).

use super::pod_index::{PodEvent, PodRecord};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a missed event is kept.
pub const MISSED_RETENTION: Duration = Duration::from_secs(600);
/// How many pods' events are kept at most.
pub const MISSED_CAPACITY: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deleted,
    Finished,
}

/// Pod UID → the last event worth acting on and when it was seen.
#[derive(Default, Debug)]
pub struct MissedEvents {
    events: HashMap<String, (Kind, PodRecord, Instant)>,
}

impl MissedEvents {
    /// Remembers a deletion (or a finished pod, when `finished_too`). Other events are ignored.
    pub fn remember(&mut self, ev: &PodEvent, finished_too: bool) {
        self.remember_at(ev, finished_too, Instant::now());
    }

    fn remember_at(&mut self, ev: &PodEvent, finished_too: bool, now: Instant) {
        let (kind, rec) = match ev {
            PodEvent::Deleted(r) => (Kind::Deleted, r),
            PodEvent::Finished(r) if finished_too => (Kind::Finished, r),
            _ => return,
        };
        // A deletion supersedes a finished transition of the same pod, never the reverse.
        if kind == Kind::Finished
            && matches!(self.events.get(&rec.uid), Some((Kind::Deleted, _, _)))
        {
            return;
        }
        self.events
            .insert(rec.uid.clone(), (kind, rec.clone(), now));
        if self.events.len() > MISSED_CAPACITY {
            self.prune(now);
        }
        while self.events.len() > MISSED_CAPACITY {
            let oldest = self
                .events
                .iter()
                .min_by_key(|(_, (_, _, t))| *t)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.events.remove(&k);
                }
                None => break,
            }
        }
    }

    /// Drops what is older than [`MISSED_RETENTION`].
    pub fn prune(&mut self, now: Instant) {
        self.events
            .retain(|_, (_, _, t)| now.saturating_duration_since(*t) < MISSED_RETENTION);
    }

    /// Everything still within retention, oldest first; the set is emptied.
    pub fn take(&mut self, now: Instant) -> Vec<PodEvent> {
        self.prune(now);
        let mut all: Vec<(Kind, PodRecord, Instant)> =
            self.events.drain().map(|(_, v)| v).collect();
        all.sort_by_key(|(_, _, t)| *t);
        all.into_iter()
            .map(|(k, r, _)| match k {
                Kind::Deleted => PodEvent::Deleted(r),
                Kind::Finished => PodEvent::Finished(r),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: &str) -> PodRecord {
        PodRecord {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            node_name: String::new(),
            service_account: "app".into(),
            uuids: vec![format!("u-{uid}")],
            finished: false,
        }
    }

    #[test]
    fn deletions_are_kept_in_order_and_taken_once() {
        let mut m = MissedEvents::default();
        let t0 = Instant::now();
        m.remember_at(&PodEvent::Deleted(rec("b")), false, t0);
        m.remember_at(
            &PodEvent::Deleted(rec("a")),
            false,
            t0 + Duration::from_secs(1),
        );
        m.remember_at(&PodEvent::Synced, false, t0);
        m.remember_at(&PodEvent::Finished(rec("c")), false, t0);
        let taken = m.take(t0 + Duration::from_secs(2));
        let uids: Vec<&str> = taken
            .iter()
            .map(|e| match e {
                PodEvent::Deleted(r) => r.uid.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(uids, ["b", "a"]);
        assert!(m.take(t0 + Duration::from_secs(3)).is_empty());
    }

    #[test]
    fn finished_pods_are_kept_only_when_they_lose_credentials_and_never_hide_a_deletion() {
        let mut m = MissedEvents::default();
        let t0 = Instant::now();
        m.remember_at(&PodEvent::Finished(rec("a")), true, t0);
        m.remember_at(&PodEvent::Deleted(rec("a")), true, t0);
        m.remember_at(&PodEvent::Finished(rec("a")), true, t0);
        let taken = m.take(t0);
        assert_eq!(taken.len(), 1);
        assert!(matches!(&taken[0], PodEvent::Deleted(r) if r.uid == "a"));
    }

    #[test]
    fn old_events_expire() {
        let mut m = MissedEvents::default();
        let t0 = Instant::now();
        m.remember_at(&PodEvent::Deleted(rec("a")), false, t0);
        m.remember_at(
            &PodEvent::Deleted(rec("b")),
            false,
            t0 + MISSED_RETENTION - Duration::from_secs(1),
        );
        m.prune(t0 + MISSED_RETENTION);
        assert_eq!(m.len(), 1);
        assert_eq!(m.take(t0 + MISSED_RETENTION).len(), 1);
    }
}
