"""The revisions, oldest first (Alembic reads them by path, never by import)."""
