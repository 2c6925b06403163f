# syntax=docker/dockerfile:1
# Orloj images: one per binary, from one multi-stage build.
#   docker build --target orlojd      -t ghcr.io/orlojhq/orloj-orlojd:0.1.0 .
#   docker build --target orlojworker -t ghcr.io/orlojhq/orloj-orlojworker:0.1.0 .
#
# Why two images rather than one with two entrypoints: the chart (image.server / image.worker) and the
# reference deploy them separately, each image carries only what its process needs (orlojd also ships
# orlojctl for `kubectl exec` administration), and server and workers can be rolled or pinned to
# different tags during an upgrade. The shared `build` stage means one compile for both.
#
# Both run as uid/gid 10001, need no writable root filesystem (the chart mounts /tmp), and use
# distroless/cc: the binaries link glibc dynamically (libc, libm, libgcc_s), which cc provides.
# scripts/build-images.sh builds equivalent images offline from local binaries for our own checks.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p orloj-bins \
 && mkdir -p /out \
 && cp target/release/orlojd target/release/orlojctl target/release/orlojworker /out/

FROM ${RUNTIME_IMAGE} AS orlojworker
COPY --from=build /out/orlojworker /usr/local/bin/orlojworker
USER 10001:10001
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/orlojworker"]
CMD ["--healthz-addr=:8081"]

# Last stage: what a plain `docker build .` produces.
FROM ${RUNTIME_IMAGE} AS orlojd
COPY --from=build /out/orlojd /out/orlojctl /usr/local/bin/
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/orlojd"]
CMD ["--addr=:8080"]
