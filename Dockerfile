# syntax=docker/dockerfile:1
#
# The nightshift image: the release binary on a small Debian runtime, run as a non-root user.
#
#   docker build -t nightshift:0.1.0 .
#   docker run --rm -p 9464:9464 -v "$PWD/jobs:/jobs:ro" nightshift:0.1.0           # the daemon
#   docker run --rm -v "$PWD/jobs:/jobs:ro" nightshift:0.1.0 run JOB --jobs /jobs --date 2026-11-03
#
# The entrypoint is the binary, so arguments are a nightshift command line. Relative paths in job
# files (`out/registry/`, `fixtures/...`) resolve in the working directory, /var/lib/nightshift.
# deploy/k8s/ and docker-compose.yml use this image; docs/scale-out.md says what of it was
# exercised (the build itself was not: no Docker daemon where it was written).

# The toolchain the project is built and tested with (Cargo.toml's rust-version, 1.88, is the
# floor). Both bases are pinned by version; pin them by digest too (`@sha256:...`) for builds
# that must be byte-for-byte repeatable. Builder and runtime are the same Debian release
# (trixie), so the binary finds the glibc it was linked against.
ARG RUST_IMAGE=rust:1.95.0-trixie
ARG RUNTIME_IMAGE=debian:13.2-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Only what the build reads (.dockerignore keeps everything else out of the context).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# --locked: exactly the dependency versions of Cargo.lock, as CI builds them. The caches keep
# the registry and the compiled dependencies between builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin nightshift \
 && install -D -m 0755 target/release/nightshift /out/nightshift

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="nightshift" \
      org.opencontainers.image.description="Scheduled batch scoring of machine-learning models over Parquet" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates: S3 over HTTPS (rustls trusts the system's roots). curl: the HEALTHCHECK (the
# binary has no health subcommand). tzdata: `date` in deploy/k8s/cronjob.yaml follows its TZ.
# Not pinned to package versions (hadolint DL3008): the release's security updates replace them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tzdata \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid and gid: Kubernetes' runAsNonRoot can only check a number. out/ is where
# the example jobs' relative paths land (a volume mounted there starts owned by this user).
RUN groupadd --system --gid 10001 nightshift \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/nightshift --create-home \
        --shell /usr/sbin/nologin nightshift \
 && install -d -o 10001 -g 10001 /var/lib/nightshift/out \
 && install -d /jobs
COPY --from=build /out/nightshift /usr/local/bin/nightshift

USER 10001:10001
WORKDIR /var/lib/nightshift
# The daemon's HTTP API: /healthz, /readyz, /metrics, the jobs and their runs (docs/daemon.md).
EXPOSE 9464
# Alive means /healthz answers 200 on port 9464 (a daemon given another --listen port needs
# `--health-cmd` to match). Only the daemon serves it: `docker run IMAGE run ...` has no use for
# it, and Kubernetes ignores HEALTHCHECK (deploy/k8s/daemon.yaml has its own probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "4", "--output", "/dev/null", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["nightshift"]
# The daemon on every job file of /jobs (mount them there), listening on all interfaces of the
# container: publish the port only where something guards it (/models/*/predict needs no token).
CMD ["daemon", "--jobs", "/jobs", "--listen", "0.0.0.0:9464"]
