# vdbi NRI plugin (DaemonSet), projected mode (useProjectedSA: true): the pod's own token reads
# the credentials (and revokes itself when a fetch fails); vdbi's token only keeps the books.
# Paths use the default KV mount `vault-db-injector` (vaultSecretName). See docs/vault-setup.md.

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
