# syntax=docker/dockerfile:1
# Build stage: rdkafka compiles its bundled librdkafka, which needs a C toolchain and make.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY xtask xtask
COPY config config
COPY schemas schemas
RUN cargo build --release --locked --bin changeflow

# Runtime stage: just the binary, its default configuration and CA certificates.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 changeflow
COPY --from=build /src/target/release/changeflow /usr/local/bin/changeflow
COPY config/changeflow.toml /etc/changeflow/changeflow.toml
USER changeflow
ENV CHANGEFLOW_CONFIG=/etc/changeflow/changeflow.toml
ENTRYPOINT ["changeflow"]
CMD ["tail"]
