//! Keys vdbi does not know. vault-db-injector ignores them silently (yaml.v2), and its own docs
//! carry some (`SyncTTLSecond`, `webhookMatchLabels`), so a file that started the Go version must
//! start vdbi: an unknown key is a warning (logged once at start, listed by `check-config`,
//! refused only by `check-config --strict`), with the key it most likely means.

use super::fields::known_paths;
use super::validate::Problem;

/// Keys of vault-db-injector's docs and Helm values that are not daemon settings, and why.
const GO_ONLY: &[(&str, &str)] = &[
    (
        "webhookMatchLabels",
        "a Helm value of vault-db-injector (the webhook's objectSelector), not a daemon setting",
    ),
    (
        "webhookFqdn",
        "a Helm value of vault-db-injector (the webhook's name), not a daemon setting",
    ),
    (
        "kubeRoleRenewer",
        "a Helm value of vault-db-injector (rendered as the renewer's kubeRole), not a daemon setting",
    ),
    (
        "kubeRoleRevoker",
        "a Helm value of vault-db-injector (rendered as the revoker's kubeRole), not a daemon setting",
    ),
];

/// The warning for the unknown key `key` found under `prefix` (dotted, empty at the top).
pub(super) fn unknown_key(key: &str, prefix: &str) -> Problem {
    let path = if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    };
    let why = GO_ONLY
        .iter()
        .find(|(k, _)| *k == path)
        .map(|(_, why)| format!(" ({why})"))
        .unwrap_or_default();
    let message = match suggest(&path) {
        Some(s) => format!("unknown key, ignored (did you mean `{s}`?)"),
        None => format!("unknown key, ignored{why}"),
    };
    Problem::unknown_key(&path, message)
}

/// The known key `path` most likely means: equal but for case, `_` and `-`, else within a small
/// edit distance of a known key at the same depth.
pub(super) fn suggest(path: &str) -> Option<&'static str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    if let Some(k) = known_paths().find(|k| norm(k) == norm(path)) {
        return Some(k);
    }
    let depth = path.matches('.').count();
    let budget = (path.len() / 5).clamp(1, 3);
    known_paths()
        .filter(|k| k.matches('.').count() == depth)
        .map(|k| (distance(&norm(k), &norm(path)), k))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, k)| (*d, *k))
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_get_a_suggestion() {
        assert_eq!(suggest("SyncTTLSecond"), Some("syncTTLSecond"));
        assert_eq!(suggest("sync_ttl_second"), Some("syncTTLSecond"));
        assert_eq!(suggest("vaultAdress"), Some("vaultAddress"));
        assert_eq!(suggest("nri.fetchtimeout"), Some("nri.fetchTimeout"));
        assert_eq!(suggest("nri.fetchTimout"), Some("nri.fetchTimeout"));
        assert_eq!(suggest("webhookMatchLabels"), None);
        assert_eq!(suggest("xyz"), None);
    }

    #[test]
    fn go_only_keys_say_what_they_are() {
        let p = unknown_key("webhookMatchLabels", "");
        assert!(p.message.contains("Helm value"), "{}", p.message);
        assert!(p.unknown_key);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
