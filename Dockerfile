# syntax=docker/dockerfile:1
# dronedelivery: multi-stage build of the `dronedelivery` binary (engine/).
#   docker build -t dronedelivery:0.1.0 .
#   docker run --rm -p 8080:8080 dronedelivery:0.1.0
# Configuration is by DD_* environment variables (see README.md); flags win over them.

FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole workspace is needed (every member is part of Cargo.lock resolution);
# .dockerignore keeps target/, .git and the chart out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin dronedelivery \
    && install -D -m 0755 target/release/dronedelivery /out/dronedelivery

# Runtime: glibc + libgcc, no shell, non-root (uid/gid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="dronedelivery" \
      org.opencontainers.image.description="Actor-model drone delivery engine" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/dronedelivery /dronedelivery
USER nonroot
EXPOSE 8080
ENTRYPOINT ["/dronedelivery"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
