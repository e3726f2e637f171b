"""Alembic migrations; `apphub migrate` (and every server start) applies them."""
