# tollgate: multi-stage build. The builder compiles the release binary (pg_query needs
# libclang for bindgen); the runtime image is Debian slim with the binary, an entrypoint that
# initialises the vault from environment variables, and a non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tollgate \
 && strip target/release/tollgate

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tollgate \
 && useradd --system --uid 10001 --gid tollgate --home-dir /var/lib/tollgate --shell /usr/sbin/nologin tollgate \
 && mkdir -p /etc/tollgate /var/lib/tollgate \
 && chown tollgate:tollgate /var/lib/tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY docker/entrypoint.sh /usr/local/bin/tollgate-entrypoint
COPY docker/tollgate.toml /etc/tollgate/tollgate.toml
COPY policies /etc/tollgate/policies
USER tollgate:tollgate
WORKDIR /var/lib/tollgate
ENV TOLLGATE_CONFIG=/etc/tollgate/tollgate.toml
# PostgreSQL, Redis and admin (API, /metrics, /healthz, /readyz) listeners.
EXPOSE 6432 6380 9187
ENTRYPOINT ["/usr/local/bin/tollgate-entrypoint"]
CMD ["serve"]
