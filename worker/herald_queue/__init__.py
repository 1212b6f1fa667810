"""Herald's PostgreSQL queue: schema, migrations, named SQL, job store, dead letters.

This package is shared by the worker and the operator and imports neither of them
(nor kopf, nor aiohttp): an import-linter contract in ``pyproject.toml`` keeps it so.
"""
