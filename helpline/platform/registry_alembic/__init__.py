"""Alembic migrations of the registry, run by ``Registry`` when it opens one (``helpline.platform.database.migrate``,
revisions kept in ``registry_alembic_version``, apart from the gateway's in the same PostgreSQL database).

A new revision: ``alembic -c helpline/platform/registry_alembic/alembic.ini revision -m "what changes"`` writes a
file in ``versions/`` from ``script.py.mako``; fill in its ``upgrade`` (both SQLite and PostgreSQL run it).
Registry files from before Alembic carry their schema in ``PRAGMA user_version``: the first revision adopts them
(``helpline.platform.registry_migrations``).
"""
