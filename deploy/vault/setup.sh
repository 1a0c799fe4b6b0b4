#!/bin/sh
# The Vault/OpenBao side of a vdbi installation, as plain CLI commands. docs/vault-setup.md
# explains each step (its code blocks are these steps, checked by scripts/check-vault-doc.py) and
# platform/vdbi-platform runs this script to configure the test platform's OpenBao.
#
# Usage (VAULT_ADDR and an admin VAULT_TOKEN in the environment; `bao`, else `vault`, on PATH):
#   deploy/vault/setup.sh vdbi                   mounts, Kubernetes auth, vdbi's policies and roles
#   deploy/vault/setup.sh database               the PostgreSQL connection `pg`
#   deploy/vault/setup.sh app ROLE GROUP NAMESPACES SERVICE_ACCOUNTS
#                                                a database role, its policy, its Kubernetes auth role
# Every step can be run again: it converges (mounts are enabled once, the rest is overwritten).
#
# Names: the KV v2 mount `vault-db-injector` (vaultSecretName), the Kubernetes auth mount
# `kubernetes` (vaultAuthPath) and the database engine `databases` (defaultEngine) are the
# defaults of vdbi and vault-db-injector; the policy files in this directory use them too.
set -eu
POLICY_DIR="$(cd "$(dirname "$0")" && pwd)"
export POLICY_DIR
command -v bao >/dev/null 2>&1 || bao() { vault "$@"; }

vdbi() {
# --- step: settings
# The policy files (this repository's deploy/vault).
POLICY_DIR="${POLICY_DIR:-deploy/vault}"
# The namespace vdbi runs in and the service accounts of its components (chart defaults for a
# release named `vdbi`; a comma-separated list binds several).
VDBI_NAMESPACE="${VDBI_NAMESPACE:-vdbi-system}"
INJECTOR_SA="${INJECTOR_SA:-vdbi}"
RENEWER_SA="${RENEWER_SA:-vdbi-renewer}"
REVOKER_SA="${REVOKER_SA:-vdbi-revoker}"
NRI_SA="${NRI_SA:-vdbi-nri}"
# How Vault reaches the cluster's API server to review service account tokens.
K8S_HOST="${K8S_HOST:?the API server URL, e.g. https://kubernetes.example.com:6443}"
K8S_CA_FILE="${K8S_CA_FILE:?a file holding the API server CA certificate}"
REVIEWER_JWT_FILE="${REVIEWER_JWT_FILE:?a file holding a token of a service account bound to system:auth-delegator}"
# --- end

# --- step: mounts
bao secrets list | grep -q '^vault-db-injector/ ' ||
  bao secrets enable -path=vault-db-injector -version=2 kv
bao secrets list | grep -q '^databases/ ' ||
  bao secrets enable -path=databases database
bao auth list | grep -q '^kubernetes/ ' ||
  bao auth enable -path=kubernetes kubernetes
# --- end

# --- step: kubernetes-auth
bao write auth/kubernetes/config \
  kubernetes_host="$K8S_HOST" \
  kubernetes_ca_cert=@"$K8S_CA_FILE" \
  token_reviewer_jwt=@"$REVIEWER_JWT_FILE" \
  disable_local_ca_jwt=true
# --- end

# --- step: policies
for p in injector-legacy injector-projected renewer revoker nri-legacy nri-projected; do
  bao policy write "vdbi-$p" "$POLICY_DIR/$p.hcl"
done
# --- end

# --- step: roles
# Legacy mode: one role for every component (vault-db-injector's kubeRole).
bao write auth/kubernetes/role/vdbi \
  bound_service_account_names="$INJECTOR_SA,$RENEWER_SA,$REVOKER_SA,$NRI_SA" \
  bound_service_account_namespaces="$VDBI_NAMESPACE" \
  token_policies=vdbi-injector-legacy,vdbi-renewer,vdbi-revoker,vdbi-nri-legacy \
  token_no_default_policy=true token_ttl=1h token_max_ttl=24h
# Projected mode: one role per component (kubeRole, kubeRoleRenewer, kubeRoleRevoker,
# kubeRoleNri), each with its component's policy only.
bao write auth/kubernetes/role/vdbi-injector \
  bound_service_account_names="$INJECTOR_SA" bound_service_account_namespaces="$VDBI_NAMESPACE" \
  token_policies=vdbi-injector-projected \
  token_no_default_policy=true token_ttl=1h token_max_ttl=24h
bao write auth/kubernetes/role/vdbi-renewer \
  bound_service_account_names="$RENEWER_SA" bound_service_account_namespaces="$VDBI_NAMESPACE" \
  token_policies=vdbi-renewer \
  token_no_default_policy=true token_ttl=1h token_max_ttl=24h
bao write auth/kubernetes/role/vdbi-revoker \
  bound_service_account_names="$REVOKER_SA" bound_service_account_namespaces="$VDBI_NAMESPACE" \
  token_policies=vdbi-revoker \
  token_no_default_policy=true token_ttl=1h token_max_ttl=24h
bao write auth/kubernetes/role/vdbi-nri \
  bound_service_account_names="$NRI_SA" bound_service_account_namespaces="$VDBI_NAMESPACE" \
  token_policies=vdbi-nri-projected \
  token_no_default_policy=true token_ttl=1h token_max_ttl=24h
# --- end
}

database() {
# --- step: database
# DB_URL keeps {{username}} and {{password}} as they are (Vault fills them in), e.g.
# postgresql://{{username}}:{{password}}@db.example.com:5432/app?sslmode=verify-full
DB_URL="${DB_URL:?the connection URL (see above)}"
DB_ADMIN_USER="${DB_ADMIN_USER:?a PostgreSQL user with CREATEROLE}"
DB_ADMIN_PASSWORD_FILE="${DB_ADMIN_PASSWORD_FILE:?a file holding its password}"
DB_ALLOWED_ROLES="${DB_ALLOWED_ROLES:?the database roles of this connection, comma-separated}"
bao write databases/config/pg \
  plugin_name=postgresql-database-plugin \
  connection_url="$DB_URL" \
  username="$DB_ADMIN_USER" password=@"$DB_ADMIN_PASSWORD_FILE" \
  allowed_roles="$DB_ALLOWED_ROLES" \
  max_open_connections=8 max_idle_connections=2
# --- end
}

app() {
# --- step: app
# ROLE: the database role, its policy and its Kubernetes auth role (one name, as vdbi expects);
# GROUP: the PostgreSQL group role holding the privileges (each credential only joins it);
# NAMESPACES, SERVICE_ACCOUNTS: who may use it (comma-separated).
ROLE="$1" GROUP="$2" NAMESPACES="$3" SERVICE_ACCOUNTS="$4"
bao write "databases/roles/$ROLE" db_name=pg default_ttl=1h max_ttl=24h \
  creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE $GROUP;" \
  revocation_statements="DROP ROLE IF EXISTS \"{{name}}\";"
sed "s|databases/creds/app-rw\"|databases/creds/$ROLE\"|" "$POLICY_DIR/app.hcl" |
  bao policy write "$ROLE" -
bao write "auth/kubernetes/role/$ROLE" \
  bound_service_account_names="$SERVICE_ACCOUNTS" bound_service_account_namespaces="$NAMESPACES" \
  token_policies="$ROLE" token_period=24h token_type=service audience=vault
# --- end
}

case "${1:-}" in
  vdbi) vdbi ;;
  database) database ;;
  app)
    [ $# -eq 5 ] || { echo "usage: $0 app ROLE GROUP NAMESPACES SERVICE_ACCOUNTS" >&2; exit 2; }
    shift
    app "$@"
    ;;
  *)
    echo "usage: $0 vdbi | database | app ROLE GROUP NAMESPACES SERVICE_ACCOUNTS" >&2
    exit 2
    ;;
esac
