# vdbi NRI plugin (DaemonSet), projected mode (useProjectedSA: true): the pod's own token reads
# the credentials (and revokes itself when a fetch fails); vdbi's token only keeps the books.
# Paths use the default KV mount `vault-db-injector` (vaultSecretName). See docs/vault-setup.md.

# Bookkeeping entries: an existing entry is read (a pod's credentials are issued once; the token
# of an entry this pod's fetch replaces revokes itself first), then written; restored or deleted
# when a fetch fails. The same paths hold each fetch's attempt record
# (`<prefix>-attempts/<uuid>.<attempt>`: the accessor of the pod's login, written before the
# credentials are read, deleted once the entry is written).
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
