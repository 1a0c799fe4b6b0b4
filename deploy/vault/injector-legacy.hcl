# vdbi injector (admission webhook), legacy mode (useProjectedSA: false): vdbi's own Vault
# token creates each pod's orphan token. Paths use the default mount names: `vault-db-injector`
# (vaultSecretName, KV v2) and `kubernetes` (vaultAuthPath). See docs/vault-setup.md.

# Role check: the application's Kubernetes auth role tells whether the pod's service account and
# namespace may use the database role.
path "auth/kubernetes/role/*" {
  capabilities = ["read"]
}

# One orphan token per pod and database role, holding only that role's policy and a period:
# both need `sudo` (the policy is not one of vdbi's own).
path "auth/token/create-orphan" {
  capabilities = ["update", "sudo"]
}

# Undoing a refused admission: its orphan tokens are revoked (their leases die with them).
path "auth/token/revoke-orphan" {
  capabilities = ["update", "sudo"]
}

# The bookkeeping entry of each credential: written before the admission is answered, deleted
# when the admission is undone.
path "vault-db-injector/data/*" {
  capabilities = ["create", "update", "delete"]
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
