# syntax=docker/dockerfile:1
# janitor as a container (a sidecar beside a notebook or SQL gateway): docs/operations.md.
#   docker build -t janitor .
#   docker run -v janitor-state:/var/lib/janitor -v ./janitor.toml:/etc/janitor/janitor.toml:ro janitor
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/janitor
COPY pyproject.toml README.md ./
COPY janitor/ janitor/
# the wheel force-includes migrations/ as janitor/_migrations (pyproject.toml)
COPY migrations/ migrations/
RUN /opt/janitor/bin/pip install --no-compile '.[postgres]' \
 && /opt/janitor/bin/python -m compileall -q /opt/janitor/lib

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 janitor \
 && useradd --system --uid 10001 --gid janitor --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin janitor \
 && mkdir -p /var/lib/janitor /etc/janitor \
 && chown 10001:10001 /var/lib/janitor \
 && chmod 0700 /var/lib/janitor
COPY --from=build /opt/janitor /opt/janitor
# STATE_DIRECTORY: the default SQLite database is /var/lib/janitor/janitor.db (DESIGN 5).
# JANITOR_LISTEN: /healthz /readyz /metrics must be reachable from outside the container.
ENV PATH=/opt/janitor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STATE_DIRECTORY=/var/lib/janitor \
    JANITOR_LISTEN=0.0.0.0:9465
VOLUME ["/var/lib/janitor"]
USER 10001:10001
WORKDIR /var/lib/janitor
EXPOSE 9465
# /healthz: the loop is alive. Never /readyz here: a database outage must not restart janitor.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["janitor", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["janitor"]
CMD ["run"]
