# One image for every sigflow role; the role is the command:
#   docker run IMAGE process | sink | api | migrate | dispatch
#   docker run IMAGE ingest exchanges --exchange binance --symbols BTC-USDT
# Non-API roles serve /metrics, /healthz, /readyz on SIGFLOW_METRICS_PORT (9100 here);
# the API serves them on SIGFLOW_API_PORT (8000).

# ---- build: the sigflow wheel and wheels of all its dependencies --------------------
FROM python:3.12-slim AS build
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY ingest/ ingest/
COPY processors/ processors/
COPY sinks/ sinks/
COPY api/ api/
COPY sigflow/ sigflow/
COPY bench/ bench/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime: slim, non-root, no compiler --------------------------------------------
FROM python:3.12-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIGFLOW_DATA_DIR=/var/lib/sigflow \
    SIGFLOW_API_HOST=0.0.0.0 \
    SIGFLOW_API_PORT=8000 \
    SIGFLOW_METRICS_HOST=0.0.0.0 \
    SIGFLOW_METRICS_PORT=9100 \
    SIGFLOW_LOG_JSON=true
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels sigflow \
    && groupadd --system --gid 10001 sigflow \
    && useradd --system --uid 10001 --gid sigflow --home-dir /var/lib/sigflow --create-home sigflow
USER 10001:10001
WORKDIR /var/lib/sigflow
EXPOSE 8000 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "sigflow.healthcheck"]
ENTRYPOINT ["sigflow"]
CMD ["--help"]
