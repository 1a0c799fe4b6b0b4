# vdbi revoker, both modes: when a pod is gone, revokes its token and database lease and deletes
# its bookkeeping entry; its sweep finds entries whose pod is gone, and orphan-lease discovery
# finds leases no entry records. Paths use the default mount names `vault-db-injector`
# (vaultSecretName, KV v2) and `databases` (defaultEngine). See docs/vault-setup.md.

# Bookkeeping entries: listed by the sweep, read, deleted once revoked.
path "vault-db-injector/metadata/*" {
  capabilities = ["list", "delete"]
}
path "vault-db-injector/data/*" {
  capabilities = ["read", "delete"]
}

# The pod's token (revoke-orphan, which needs sudo; its leases die with it), then its lease if
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

# Projected mode: a reservation left by an issuance killed between its pod's login and its
# bookkeeping entry records the pod token's accessor (never the token). The sweep looks the token
# up by that accessor (its metadata must name the reservation's role and service account), then
# revokes it by accessor; its leases die with it. No accessor is listed or searched.
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

# Projected NRI mode: each fetch of the plugin records its login's accessor the same way, under a
# key of its own. A record left behind is settled by comparing it with the accessor of the token
# the pod's bookkeeping entry holds (a token the revoker already reads from KV and may revoke).
path "auth/token/lookup" {
  capabilities = ["update"]
}

# Orphan-lease discovery (orphanLeaseDiscovery): listing the leases of the database roles needs
# `list` and `sudo`. One line per database secrets engine vdbi issues from.
path "sys/leases/lookup/databases/creds/*" {
  capabilities = ["list", "sudo"]
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
