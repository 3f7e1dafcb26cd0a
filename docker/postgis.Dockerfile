# PostGIS for the compose stack, from Debian's packages (no registry image needed).
# Elsewhere the usual postgis/postgis:15-3.x image is a drop-in: same env (POSTGRES_PASSWORD,
# POSTGRES_USER, POSTGRES_DB), port 5432, data in /var/lib/postgresql/data.
#   podman --runtime runc build --network host --ulimit nofile=8192:8192 --ulimit nproc=8192:8192 \
#     --format docker -f docker/postgis.Dockerfile -t localhost/hdx-postgis:15 docker/
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
# No "main" cluster from the package's postinst: the entrypoint makes one in $PGDATA.
RUN export DEBIAN_FRONTEND=noninteractive \
 && mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 postgresql-15-postgis-3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY --chmod=0755 postgis-entrypoint.sh /usr/local/bin/postgis-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    POSTGRES_USER=postgres \
    POSTGRES_DB=gis
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
USER postgres
STOPSIGNAL SIGINT
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
  CMD ["sh", "-c", "pg_isready -q -h 127.0.0.1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\""]
ENTRYPOINT ["postgis-entrypoint.sh"]
CMD ["postgres"]
