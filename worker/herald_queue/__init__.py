"""Herald's PostgreSQL queue: schema, migrations, named SQL, the job store, the target
registry, dead letters, LISTEN/NOTIFY, advisory locks and the embedded server.

Shared by the worker and the operator; it imports neither of them (nor kopf, nor aiohttp,
nor delivery): the import-linter contracts in ``pyproject.toml`` keep it so.
"""
