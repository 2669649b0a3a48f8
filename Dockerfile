FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY bot ./bot
COPY conversations ./conversations
COPY storage ./storage
RUN pip install . && useradd --create-home --uid 10001 kneecoach && mkdir /data \
    && chown kneecoach /data
USER kneecoach
WORKDIR /data
# SQLite by default, kept on the /data volume; set KNEECOACH_DATABASE_URL for PostgreSQL.
ENV KNEECOACH_DATABASE_URL=sqlite+aiosqlite:////data/kneecoach.db
# The exercises' demonstration GIFs, drawn once per program version.
ENV KNEECOACH_DEMO_DIR=/data/demos
VOLUME ["/data"]
EXPOSE 8080
CMD ["kneecoach", "run"]
