"""Alembic migrations, run by server.core.migrate (no alembic.ini)."""
