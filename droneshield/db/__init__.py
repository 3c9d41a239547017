"""All database access. triopg (asyncpg under trio-asyncio) is reached only from this package, so
it can be replaced without touching the rest of the daemon."""
