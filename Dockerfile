# syntax=docker/dockerfile:1
# hdx-jobs: one image, one binary; the role is the command (serve, worker, scheduler, events listen).
# Beside it, hdx-jobs-import: geopreview's import child, the only executable that links GDAL (the
# worker runs it for each import; hdx-jobs itself never loads libgdal).
#
# Targets:
#   from-source (default, last stage): compiles in an official Rust image (CI elsewhere).
#     docker build -t hdx-jobs .
#   from-host: takes the binaries built on a Debian 12 host (same glibc, same libgdal32) from the
#     build context; the runtime stage is the same, so what is smoke-tested is what ships.
#     podman --runtime runc build --network host --ulimit nofile=8192:8192 --ulimit nproc=8192:8192 \
#       --format docker --target from-host -t hdx-jobs:test .
#
# Build arguments: RUST_IMAGE, DEBIAN_IMAGE (base images), BINARY and IMPORT_BINARY (from-host:
# paths of hdx-jobs and hdx-jobs-import in the context).

ARG RUST_IMAGE=rust:1-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- /preview's MapLibre GL JS and country outlines from npm (embedded by build.rs) ----------
FROM ${DEBIAN_IMAGE} AS assets
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update \
 && apt-get install -y --no-install-recommends npm \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/fetch-assets.sh scripts/fetch-assets.sh
RUN bash scripts/fetch-assets.sh && ls -l target/assets/maplibre-gl target/assets/countries

# --- compile --------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update \
 && apt-get install -y --no-install-recommends libgdal-dev pkg-config \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# build.rs embeds MapLibre from HDX_JOBS_MAPLIBRE_DIR and the country outlines from
# HDX_JOBS_COUNTRIES_DIR (defaults under target/assets/, which the target/ cache mount below
# would hide).
COPY --from=assets /src/target/assets/maplibre-gl /opt/maplibre-gl
COPY --from=assets /src/target/assets/countries /opt/countries
ENV HDX_JOBS_MAPLIBRE_DIR=/opt/maplibre-gl \
    HDX_JOBS_COUNTRIES_DIR=/opt/countries
# .git stays out of the context: pass the commit for /version and hdx_jobs_build_info
# (--build-arg HDX_JOBS_COMMIT=$(git rev-parse --short=12 HEAD)); else they say "unknown".
ARG HDX_JOBS_COMMIT=""
ENV HDX_JOBS_COMMIT=${HDX_JOBS_COMMIT}
# Cache mounts: BuildKit (Docker) and buildah both support them; drop them for other builders.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hdx-jobs-cli \
 && install -m 0755 target/release/hdx-jobs target/release/hdx-jobs-import /usr/local/bin/

# --- runtime: what both final targets share --------------------------------------------------
FROM ${DEBIAN_IMAGE} AS runtime
# libgdal32 pulls everything hdx-jobs-import links (GDAL, PROJ + proj-data, GEOS, libpq5,
# libssl3, libcurl) and gdal-data (hdx-jobs needs only libc); tini reaps the import child
# processes and forwards signals.
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update \
 && apt-get install -y --no-install-recommends libgdal32 ca-certificates tini \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 hdx \
 && useradd --uid 10001 --gid hdx --no-create-home --home-dir /var/lib/hdx-jobs --no-log-init \
      --shell /usr/sbin/nologin hdx \
 && install -d -o hdx -g hdx -m 0750 /var/lib/hdx-jobs /var/lib/hdx-jobs/tmp
ENV HDX_JOBS_BIND=0.0.0.0:5000 \
    HDX_GIS_TMP=/var/lib/hdx-jobs/tmp
WORKDIR /var/lib/hdx-jobs
VOLUME ["/var/lib/hdx-jobs/tmp"]
EXPOSE 5000
# For the API (serve). Workers/scheduler/events override it in compose (or disable it).
# No curl in the image: bash's /dev/tcp asks /readyz.
# (podman keeps HEALTHCHECK only with --format docker; the OCI format drops it.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${HDX_JOBS_BIND##*:} && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
USER hdx
ENTRYPOINT ["tini", "--", "hdx-jobs"]
CMD ["serve"]

# --- final: binaries built on the host (smoke-tested here) ------------------------------------
# hdx-jobs looks for hdx-jobs-import in its own folder.
FROM runtime AS from-host
ARG BINARY=target/release/hdx-jobs
ARG IMPORT_BINARY=target/release/hdx-jobs-import
COPY ${BINARY} /usr/local/bin/hdx-jobs
COPY ${IMPORT_BINARY} /usr/local/bin/hdx-jobs-import

# --- final (default): the binaries compiled in the build stage (CI elsewhere) -----------------
FROM runtime AS from-source
COPY --from=build /usr/local/bin/hdx-jobs /usr/local/bin/hdx-jobs-import /usr/local/bin/
