# vdbi injector (admission webhook), projected mode (useProjectedSA: true): the pod's own token
# (a TokenRequest for its service account, logged in as the database role) reads the
# credentials, and revokes itself when an admission is undone; vdbi's token only keeps the books.
# Paths use the default KV mount `vault-db-injector` (vaultSecretName). See docs/vault-setup.md.

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
