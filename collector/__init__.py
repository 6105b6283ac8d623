"""connect-collector: Amazon Connect historical metrics into PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"
