# The image for machines that can pull from a registry. On a machine without one (no base
# images at all), `docker/build-image.sh` builds the same image from the local toolchain.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p tollgate && strip target/release/tollgate

FROM debian:bookworm-slim
COPY --from=build /src/target/release/tollgate /tollgate
ENV TOLLGATE_DATA_DIR=/data
WORKDIR /data
EXPOSE 8000 8001 7000 7946/udp
ENTRYPOINT ["/tollgate"]
CMD ["node"]
