# One image for every CallPulse service of the distributed mode (deploy/docker-compose.yml):
#   callpulse migrate | ingest | aggregator | api
# Build: docker build -t callpulse:0.1.0 .
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
# Wheels of CallPulse and its distributed-mode dependencies (psycopg's binary wheel
# bundles libpq; nothing is compiled).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[distributed]"

FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home callpulse
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "callpulse[distributed]" \
    && rm -rf /wheels
USER callpulse
WORKDIR /app
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# api, ingest, aggregator metrics (see deploy/docker-compose.yml)
EXPOSE 8000 8001 9108
ENTRYPOINT ["callpulse"]
CMD ["--help"]
