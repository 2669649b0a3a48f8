"""Persistence: SQLAlchemy models, the repository the engine uses, database set-up, migrations."""
