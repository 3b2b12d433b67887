# Build stage: compile the release binary.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The workspace's manifests and sources (the load generator is a member).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY loadtest ./loadtest
RUN cargo build --release --locked --bin ringcast

# Runtime stage: just the binary, as an unprivileged user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home ringcast
COPY --from=build /src/target/release/ringcast /usr/local/bin/ringcast
USER ringcast
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
# No curl in the slim image: bash's /dev/tcp is enough for a health probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT} && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ringcast"]
