# One image for every FIML Stream service; docker-compose.yml picks the command.
#   docker build -t fiml-stream .   then   docker run --rm fiml-stream --help
FROM node:20-slim AS dashboard
WORKDIR /src/gateway/static
# The dashboard's chart library comes from npm (no copy of it lives in the repository).
COPY gateway/static/package.json gateway/static/package-lock.json* ./
RUN npm install --omit=dev --no-audit --no-fund

# The compiled arbitration core (native/arbcore, Rust through PyO3) as a wheel for CPython 3.11
# on Debian bookworm, the base of python:3.11-slim below. Without it the worker would stop on
# EngineUnavailableError (or would have to run the slower Python reference,
# FIML_ARB_ENGINE=python).
FROM rust:1-slim-bookworm AS arbcore
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/maturin && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY native/arbcore ./native/arbcore
RUN /opt/maturin/bin/maturin build --release --compatibility linux -i python3 \
    -m native/arbcore/Cargo.toml -o /wheels

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
COPY --from=arbcore /wheels /wheels
# Editable keeps gateway/static/node_modules (not package data) next to the code it serves.
RUN pip install -e . /wheels/*.whl && rm -rf /wheels && useradd --create-home --uid 10001 fiml \
    && mkdir -p /var/lib/fiml && chown fiml /var/lib/fiml
USER fiml
EXPOSE 8000
ENTRYPOINT ["fiml"]
CMD ["--help"]
