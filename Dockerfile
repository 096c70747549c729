# The migration job image: runs `python scripts/migrate.py <service> up --wait 60`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MIGRATE_ROOT=/app
RUN useradd --create-home --uid 10001 migrate
WORKDIR /app

# Runtime dependencies only: no embedded server, no test tools.
COPY pyproject.toml README.md ./
COPY alembic_common ./alembic_common
RUN pip install .
COPY services ./services
COPY scripts ./scripts

USER migrate
CMD ["python", "scripts/migrate.py", "--help"]
