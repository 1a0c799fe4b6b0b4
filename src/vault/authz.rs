//! In-process role authorisation of the legacy mode (`CanIGetRoles`, compat §3.7).
//!
//! Same order and causes as vault-db-injector, but bound names and namespaces are matched the
//! way Vault's kubernetes auth matches them at login, instead of by exact membership only:
//! * a list that is exactly `["*"]` allows every value;
//! * otherwise each entry is a pattern with an optional leading and/or trailing `*`
//!   (`prefix-*`, `*-suffix`, `*middle*`), as Vault's `strutil.GlobbedStringsMatch`; any
//!   other entry (including a `*` inside a longer list) matches only itself.
//!
//! The check is never more permissive than Vault's own login. A role that also has a namespace
//! label selector is checked against its namespace list only (the selector needs the
//! apiserver), which can deny a pod Vault would admit, never the reverse.

use super::types::KubeAuthRole;
use std::fmt;

/// Why [`can_get_role`] refused; [`DenyCause::as_str`] is the metric's `cause` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyCause {
    /// The DB role is not among the auth role's `token_policies`.
    RoleNotInAssumeRole,
    /// The pod's service account is not bound to the auth role.
    ServiceAccountNameNotInRole,
    /// The pod's namespace is not bound to the auth role.
    NamespaceNotInRole,
}

impl DenyCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCause::RoleNotInAssumeRole => "RoleNotInAssumeRole",
            DenyCause::ServiceAccountNameNotInRole => "ServiceAccountNameNotInRole",
            DenyCause::NamespaceNotInRole => "NamespaceNotInRole",
        }
    }
}

impl fmt::Display for DenyCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// May a pod running as `service_account` in `namespace` get credentials of `db_role`, given
/// the kubernetes auth `role` of the same name? Checks, in this order: `db_role` ∈
/// `token_policies` (exact), the service account against the bound names, the namespace
/// against the bound namespaces.
pub fn can_get_role(
    role: &KubeAuthRole,
    db_role: &str,
    service_account: &str,
    namespace: &str,
) -> Result<(), DenyCause> {
    if !role.token_policies.iter().any(|p| p == db_role) {
        return Err(DenyCause::RoleNotInAssumeRole);
    }
    if !bound_list_allows(&role.bound_service_account_names, service_account) {
        return Err(DenyCause::ServiceAccountNameNotInRole);
    }
    if !bound_list_allows(&role.bound_service_account_namespaces, namespace) {
        return Err(DenyCause::NamespaceNotInRole);
    }
    Ok(())
}

/// Vault's bound-list semantics: `["*"]` allows all, else any entry glob-matches. An empty
/// value never matches.
pub fn bound_list_allows(list: &[String], value: &str) -> bool {
    if value.is_empty() {
        return false;
    }
    if list.len() == 1 && list[0] == "*" {
        return true;
    }
    list.iter().any(|pattern| glob_match(pattern, value))
}

/// Vault's `GlobbedStringsMatch`: a leading and/or trailing `*` in `pattern`; a pattern
/// shorter than 2 characters matches only itself.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    if pattern.len() < 2 {
        return pattern == value;
    }
    let prefix = pattern.starts_with('*');
    let suffix = pattern.ends_with('*');
    match (prefix, suffix) {
        (true, true) => value.contains(&pattern[1..pattern.len() - 1]),
        (true, false) => value.ends_with(&pattern[1..]),
        (false, true) => value.starts_with(&pattern[..pattern.len() - 1]),
        (false, false) => pattern == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(policies: &[&str], names: &[&str], namespaces: &[&str]) -> KubeAuthRole {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        KubeAuthRole {
            token_policies: v(policies),
            bound_service_account_names: v(names),
            bound_service_account_namespaces: v(namespaces),
            ..Default::default()
        }
    }

    #[test]
    fn exact_membership_as_in_go() {
        let r = role(
            &["app-rw", "default"],
            &["app", "worker"],
            &["prod", "staging"],
        );
        assert_eq!(can_get_role(&r, "app-rw", "app", "prod"), Ok(()));
        assert_eq!(can_get_role(&r, "app-rw", "worker", "staging"), Ok(()));
        assert_eq!(
            can_get_role(&r, "app-ro", "app", "prod"),
            Err(DenyCause::RoleNotInAssumeRole)
        );
        assert_eq!(
            can_get_role(&r, "app-rw", "other", "prod"),
            Err(DenyCause::ServiceAccountNameNotInRole)
        );
        assert_eq!(
            can_get_role(&r, "app-rw", "app", "dev"),
            Err(DenyCause::NamespaceNotInRole)
        );
    }

    #[test]
    fn order_of_checks() {
        let r = role(&["x"], &["a"], &["n"]);
        // everything wrong: the policy is reported first, then the SA
        assert_eq!(
            can_get_role(&r, "y", "b", "m"),
            Err(DenyCause::RoleNotInAssumeRole)
        );
        assert_eq!(
            can_get_role(&r, "x", "b", "m"),
            Err(DenyCause::ServiceAccountNameNotInRole)
        );
    }

    #[test]
    fn wildcard_and_globs() {
        let r = role(&["db"], &["*"], &["team-*"]);
        assert_eq!(can_get_role(&r, "db", "anything", "team-a"), Ok(()));
        assert_eq!(can_get_role(&r, "db", "anything", "team-"), Ok(()));
        assert_eq!(
            can_get_role(&r, "db", "anything", "other"),
            Err(DenyCause::NamespaceNotInRole)
        );
        let r = role(&["db"], &["*-reader", "svc-*", "*mid*"], &["*"]);
        assert_eq!(can_get_role(&r, "db", "orders-reader", "ns"), Ok(()));
        assert_eq!(can_get_role(&r, "db", "svc-a", "ns"), Ok(()));
        assert_eq!(can_get_role(&r, "db", "a-mid-b", "ns"), Ok(()));
        assert_eq!(
            can_get_role(&r, "db", "writer", "ns"),
            Err(DenyCause::ServiceAccountNameNotInRole)
        );
    }

    #[test]
    fn vault_quirks_kept() {
        // `*` is a wildcard only as the whole list (as in Vault)
        let r = role(&["db"], &["*", "a"], &["ns"]);
        assert_eq!(can_get_role(&r, "db", "a", "ns"), Ok(()));
        assert_eq!(
            can_get_role(&r, "db", "b", "ns"),
            Err(DenyCause::ServiceAccountNameNotInRole)
        );
        // policies are never globbed
        let r = role(&["app-*"], &["*"], &["*"]);
        assert_eq!(
            can_get_role(&r, "app-rw", "a", "ns"),
            Err(DenyCause::RoleNotInAssumeRole)
        );
        // empty lists and empty values deny
        let r = role(&["db"], &[], &["*"]);
        assert_eq!(
            can_get_role(&r, "db", "a", "ns"),
            Err(DenyCause::ServiceAccountNameNotInRole)
        );
        let r = role(&["db"], &["*"], &["*"]);
        assert_eq!(
            can_get_role(&r, "db", "", "ns"),
            Err(DenyCause::ServiceAccountNameNotInRole)
        );
        assert_eq!(
            DenyCause::NamespaceNotInRole.to_string(),
            "NamespaceNotInRole"
        );
    }

    #[test]
    fn glob_match_cases() {
        assert!(glob_match("a", "a"));
        assert!(!glob_match("*", "a")); // a lone `*` is only special as the whole list
        assert!(glob_match("**", "anything")); // contains ""
        assert!(glob_match("ab*", "abc"));
        assert!(!glob_match("ab*", "xab"));
        assert!(glob_match("*ab", "xab"));
        assert!(glob_match("*b*", "abc"));
        assert!(!glob_match("a*c", "abc")); // inner `*` is literal
        assert!(glob_match("a*c", "a*c"));
    }
}
