#!/usr/bin/env bash
# Installs (as root, with apt) or names exactly what tollgate's build, demo and tests need.
#   scripts/ensure-deps.sh demo   what the build and the demo need (the first five, python3)
#   scripts/ensure-deps.sh        everything the test suite needs too (the client suite's JDK,
#                                 JDBC driver, Node; cargo's rustfmt and clippy)
#   libclang-dev        pg_query's build (bindgen)
#   postgresql-15       PostgreSQL server binaries (initdb, postgres, pgbench) for the demo and tests
#   postgresql-client   psql
#   redis-server        redis-server for the demo and the Redis tests
#   redis-tools         redis-cli (tests, demo lines) and redis-benchmark
#   libpostgresql-jdbc-java  the PostgreSQL JDBC driver (/usr/share/java/postgresql.jar) for the
#                       client suite (tests/clients), with a JDK (javac): default-jdk-headless
#   python3, python3-venv, nodejs, npm  the client suite's Python and Node clients (installed,
#                       pinned, from PyPI and npm by tests/clients/run.sh itself); python3 with
#                       venv also runs the demo's MongoDB-wire test server (SecantusDB, installed
#                       from PyPI into a cached venv by the demo on first use)
set -euo pipefail
for_demo=false
[ "${1:-}" = demo ] && for_demo=true

missing=()
# libclang itself (libclang.so / libclang-N.so), not libclang-cpp, which other packages bring.
have_libclang() { ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 || ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so'; }
have_pg_server() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1; }
have_pgbench() { command -v pgbench >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1; }

have_libclang || missing+=(libclang-dev)
have_pg_server || missing+=(postgresql-15)
have_pgbench || missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && missing+=(python3-venv)
if ! $for_demo; then
  # The client compatibility suite (tests/clients/run.sh).
  [ -r /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
  command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "tollgate: cargo (Rust toolchain) is required: https://rustup.rs" >&2
  exit 1
fi
# The test command checks formatting and lints: cargo's rustfmt and clippy components.
if ! $for_demo; then
  for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
      name=$([ "$component" = fmt ] && echo rustfmt || echo clippy)
      if command -v rustup >/dev/null 2>&1; then
        echo "tollgate: installing the Rust component $name with rustup" >&2
        rustup component add "$name"
      else
        echo "tollgate: cargo $component is missing: install the Rust component $name" >&2
        exit 1
      fi
    fi
  done
fi

# Disk: a fresh `cargo test --all-targets` writes about 7 GB into target/. Say so up front rather
# than let the linker fail half-way with a truncated "No space left on device".
free_kb=$(df -Pk "$(dirname "$0")/.." 2>/dev/null | awk 'NR==2 {print $4}')
if [ -n "${free_kb:-}" ] && [ "$free_kb" -lt $((8 * 1024 * 1024)) ]; then
  echo "tollgate: warning: only $((free_kb / 1024)) MB free where target/ lives;" \
    "a fresh build of the test suite needs about 7 GB (cargo clean frees old builds)" >&2
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
# Deduplicate.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "tollgate: installing ${missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "tollgate: missing system packages: ${missing[*]}" >&2
  echo "  install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
