"""Adapters: the only modules that import aiobotocore, asyncpg, pgserver or HTTP servers."""
