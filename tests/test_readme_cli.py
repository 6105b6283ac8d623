"""The README's command-line summary and `--help` agree: every command and flag, both ways."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from collector.cli import build_parser
from tests.cli_run import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _readme_summary() -> dict[str | None, set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Command line", 1)[1]
    block = section.split("```", 2)[1]
    out: dict[str | None, set[str]] = {}
    command: str | None = None
    for line in block.splitlines():
        line = line.split("#", 1)[0]
        if line.startswith("collector "):
            word = line.split()[1]
            command = None if word.startswith("[") else word
            out.setdefault(command, set())
        if line.strip():
            out[command] |= set(re.findall(r"--[a-z][a-z-]*", line))
    return out


def _parser_flags() -> dict[str | None, set[str]]:
    parser = build_parser()

    def flags(p: argparse.ArgumentParser) -> set[str]:
        return {o for a in p._actions for o in a.option_strings if o.startswith("--") and o != "--help"}

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str | None, set[str]] = {None: flags(parser)}
    out.update({name: flags(p) for name, p in sub.choices.items()})
    return out


def test_readme_lists_every_command_and_flag_and_no_others() -> None:
    assert _readme_summary() == _parser_flags()


async def test_help_lists_every_command_and_exit_code() -> None:
    out = await run_cli("--help")
    assert out.returncode == 0
    for command in _parser_flags():
        if command:
            assert command in out.stdout
    text = " ".join(out.stdout.split())
    assert "2 bad input or config" in text and "3 the environment" in text
    for command, flags in _parser_flags().items():
        if command:
            sub = await run_cli(command, "--help")
            assert sub.returncode == 0
            assert flags <= set(re.findall(r"--[a-z][a-z-]*", sub.stdout)), command
