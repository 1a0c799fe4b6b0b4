# An application's policy, one per database role: the Kubernetes auth role, the database role
# and this policy share one name (here `app-rw`, on the `databases` engine). vdbi gives it to
# the pod's token: legacy, as the only policy of the orphan token it creates; projected, through
# the pod's login as this role. See docs/vault-setup.md.

path "databases/creds/app-rw" {
  capabilities = ["read"]
}

# The token renews itself (legacy orphan tokens are renewed by vdbi's renewer) and revokes
# itself when vdbi undoes a projected admission.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
