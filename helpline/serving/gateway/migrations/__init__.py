"""Alembic migrations of the gateway database, run by ``GatewayStore`` when it opens one (``store_db.migrate``).

A new revision: ``alembic -c helpline/serving/gateway/migrations/alembic.ini revision -m "what changes"`` writes
a file in ``versions/`` from ``script.py.mako``; fill in its ``upgrade`` (both SQLite and PostgreSQL run it).
"""
