"""The README's examples run as written: its V2 example config loads, and every SQL
block runs on a migrated database and names only profiles that config defines."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from collector.adapters.postgres import migrate
from collector.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str, text: str = README) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def _v2_example_config(tmp_path: Path) -> Path:
    section = README.split("## GetMetricDataV2 profiles", 1)[1]
    block = _blocks("toml", section)[0]
    cfg = tmp_path / "readme.toml"
    cfg.write_text('[[instances]]\nid = "11111111-2222-3333-4444-555555555555"\nregion = "us-east-1"\n\n'
                   + block, encoding="utf-8")
    return cfg


def test_the_v2_example_config_loads(tmp_path: Path) -> None:
    settings = load_settings(_v2_example_config(tmp_path), environ={})
    assert {p.name for p in settings.profiles} == {"agents_15m", "agents_daily", "queues_daily"}


async def test_every_sql_example_runs_and_queries_a_configured_profile(tmp_path: Path, database_url: str) -> None:
    profiles = {p.name for p in load_settings(_v2_example_config(tmp_path), environ={}).profiles} | {"default"}
    blocks = _blocks("sql")
    assert len(blocks) >= 3
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        for sql in blocks:
            named = set(re.findall(r"profile = '([^']+)'", sql))
            assert named <= profiles, (named - profiles, sql)
            await conn.fetch(sql)
    finally:
        await conn.close()
