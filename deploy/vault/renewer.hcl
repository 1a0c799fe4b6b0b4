# vdbi renewer, both modes: keeps the tokens and database leases of live pods alive, fills in
# the pod and node names of entries written at admission, and purges an entry whose lease Vault
# can no longer renew. Paths use the default KV mount `vault-db-injector` (vaultSecretName).
# See docs/vault-setup.md.

# Bookkeeping entries: listed every cycle, read, completed; deleted when purged.
path "vault-db-injector/metadata/*" {
  capabilities = ["list", "delete"]
}
path "vault-db-injector/data/*" {
  capabilities = ["read", "update", "delete"]
}

# Renewal of each recorded token and lease.
path "auth/token/renew" {
  capabilities = ["update"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}

# Purge of an unrenewable entry: its token (revoke-orphan, which needs sudo), then its lease if
# Vault still holds it.
path "auth/token/revoke-orphan" {
  capabilities = ["update", "sudo"]
}
path "sys/leases/lookup" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
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
