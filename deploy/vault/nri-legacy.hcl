# vdbi NRI plugin (DaemonSet), legacy mode (useProjectedSA: false): on a container creation it
# checks the Vault role as the injector does, creates the pod's orphan token and records it.
# Paths use the default mount names `vault-db-injector` (vaultSecretName, KV v2) and `kubernetes`
# (vaultAuthPath). See docs/vault-setup.md.

# Role check against the application's Kubernetes auth role.
path "auth/kubernetes/role/*" {
  capabilities = ["read"]
}

# The pod's orphan token (policy and period: sudo), revoked again when the fetch fails or is
# superseded.
path "auth/token/create-orphan" {
  capabilities = ["update", "sudo"]
}
path "auth/token/revoke-orphan" {
  capabilities = ["update", "sudo"]
}

# Bookkeeping entries: an existing entry is read (a pod's credentials are issued once), then
# written; restored or deleted when a fetch fails.
path "vault-db-injector/data/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "vault-db-injector/metadata/*" {
  capabilities = ["delete"]
}

# vdbi's own login token (the roles set token_no_default_policy).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
