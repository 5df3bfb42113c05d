"""Alembic migrations of the result store (see env.py)."""
