#!/bin/sh
# tollgate container entrypoint: initialise the vault from environment variables, create the
# example agents and an admin token on first start, check the config, then run tollgate.
#
#   TOLLGATE_MASTER_KEY        64 hex characters (required; `openssl rand -hex 32`)
#   TOLLGATE_VAULT_<NAME>      stored as vault secret <name> (lower case), e.g.
#                              TOLLGATE_VAULT_SHOP_PASSWORD -> shop_password
#   TOLLGATE_AGENTS            agents to create if missing (default: "analyst writer trusted");
#                              each token is printed once, on the start that creates it
#   TOLLGATE_ADMIN_TOKEN_NAME  admin token to create if the tokens file is empty (default: ops)
#
# Secret values are piped to `tollgate vault set` and never printed.
set -eu

: "${TOLLGATE_MASTER_KEY:?set TOLLGATE_MASTER_KEY to 64 hex characters (openssl rand -hex 32)}"
export TOLLGATE_CONFIG="${TOLLGATE_CONFIG:-/etc/tollgate/tollgate.toml}"

for var in $(env | sed -n 's/^TOLLGATE_VAULT_\([A-Za-z0-9_]*\)=.*/\1/p'); do
  name=$(printf '%s' "$var" | tr 'A-Z' 'a-z')
  printenv "TOLLGATE_VAULT_$var" | tollgate vault set "$name"
done

for agent in ${TOLLGATE_AGENTS:-analyst writer trusted}; do
  if ! tollgate agent list | cut -f1 | grep -qx "$agent"; then
    printf 'agent %s token (shown once): ' "$agent"
    tollgate agent add "$agent"
  fi
done

if [ -z "$(tollgate admin-token list)" ]; then
  printf 'admin token %s (role admin, shown once): ' "${TOLLGATE_ADMIN_TOKEN_NAME:-ops}"
  tollgate admin-token add "${TOLLGATE_ADMIN_TOKEN_NAME:-ops}" --role admin
fi

tollgate check
exec tollgate "$@"
