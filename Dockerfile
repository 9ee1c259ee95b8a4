# syntax=docker/dockerfile:1
# The etcd-monitor image: the release binary (no test kit) on distroless, as a
# non-root user, with the history in a volume so the root filesystem can be
# read-only. Build from the repository root:
#   docker build -t etcd-monitor:dev .
# docs/deploy.md has the run, Compose, Kubernetes and Helm instructions.

ARG RUST_VERSION=1.95

# ---- build: the workspace's toolchain and protoc, and `make binary`, the
# same command `make build` runs.
FROM rust:${RUST_VERSION}-bookworm AS build
# protoc for etcd-client's generated gRPC code; Debian's build is pinned by
# the release (bookworm), not by a version string that each point release moves.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make binary \
 && install -D -m 0755 target/release/etcd-monitor /out/usr/local/bin/etcd-monitor \
 && install -d -m 0700 /out/var/lib/etcd-monitor

# ---- run: glibc, CA certificates and a nonroot user (65532), nothing else
# (no shell, no package manager).
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="etcd-monitor" \
      org.opencontainers.image.description="Monitor, alert on, benchmark and operate etcd clusters" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/deploy.md" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/usr/local/bin/etcd-monitor /usr/local/bin/etcd-monitor
COPY --from=build --chown=65532:65532 /out/var/lib/etcd-monitor /var/lib/etcd-monitor
COPY deploy/container/config.yaml /etc/etcd-monitor/config.yaml
USER 65532:65532
WORKDIR /var/lib/etcd-monitor
VOLUME ["/var/lib/etcd-monitor"]
ENV ETCD_MONITOR_CONFIG=/etc/etcd-monitor/config.yaml
EXPOSE 8080
# `healthcheck` GETs /health at the configured api.listen: exit 0 or 1, as
# Docker reads them; the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/etcd-monitor", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/etcd-monitor"]
CMD ["run"]
