# Redis for the compose stack, from Debian's redis-server (elsewhere: the usual redis:7 image).
#   podman --runtime runc build --network host ... --format docker -f docker/redis.Dockerfile -t localhost/hdx-redis:7 docker/
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis -m 0750 /data
VOLUME ["/data"]
WORKDIR /data
EXPOSE 6379
USER redis
HEALTHCHECK --interval=10s --timeout=5s --retries=5 CMD ["redis-cli", "-h", "127.0.0.1", "ping"]
# The Debian config daemonizes and binds to localhost: run with arguments instead.
ENTRYPOINT ["redis-server"]
CMD ["--bind", "*", "-::*", "--protected-mode", "no", "--port", "6379", "--dir", "/data", "--save", "", "--appendonly", "no"]
