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
# /healthz on KNEECOACH_LISTEN: 200 when the database answers, the tick runs and the sender is
# alive, probed by `python -m bot.web` (the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot.web"]
# SIGTERM (docker stop) finishes the messages in hand and exits 0 within the grace period.
STOPSIGNAL SIGTERM
CMD ["kneecoach", "run"]
