# syntax=docker/dockerfile:1
# weir's container image: the `weir` binary on a distroless base, as user
# 65532 (nonroot), no shell. Both the controller and the proxies run it
# (the chart sets `command: [weir]` and the subcommand as args).
#
#   docker build -t REGISTRY/weir:0.1.0 . && docker push REGISTRY/weir:0.1.0
#
# Without a container engine, image/build makes the same runtime image from
# scratch (the binary, the libraries it links, CA certificates, /etc/passwd)
# as an OCI layout and a `docker load`-able tarball.

# Bookworm on both sides: the binary links the glibc of the runtime image.
FROM docker.io/library/rust:1.95-bookworm AS build
# aws-lc-sys (rustls's crypto provider) compiles C; cmake covers the
# versions and targets whose build needs it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir \
    && install -m 0755 -D target/release/weir /out/weir \
    && strip --strip-unneeded /out/weir

# glibc, libgcc_s, CA certificates and the nonroot user (65532); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="Progressive delivery for LLM inference" \
      org.opencontainers.image.source="https://github.com/weir-dev/weir" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/weir /usr/local/bin/weir
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weir"]
