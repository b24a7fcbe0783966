# One image for every FIML Stream service; docker-compose.yml picks the command.
#   docker build -t fiml-stream .   then   docker run --rm fiml-stream --help
FROM node:20-slim AS dashboard
WORKDIR /src/gateway/static
# The dashboard's chart library comes from npm (no copy of it lives in the repository).
COPY gateway/static/package.json gateway/static/package-lock.json* ./
RUN npm install --omit=dev --no-audit --no-fund

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FIML_HOME=/var/lib/fiml FIML_ARB_DATADIR=/var/lib/fiml/arbitration
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agents ./agents
COPY gateway ./gateway
COPY schemas ./schemas
COPY infra ./infra
COPY --from=dashboard /src/gateway/static/node_modules ./gateway/static/node_modules
# Editable keeps gateway/static/node_modules (not package data) next to the code it serves.
RUN pip install -e . && useradd --create-home --uid 10001 fiml \
    && mkdir -p /var/lib/fiml && chown fiml /var/lib/fiml
USER fiml
EXPOSE 8000
ENTRYPOINT ["fiml"]
CMD ["--help"]
