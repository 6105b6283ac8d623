"""The README's Layout rules, checked on the source: adapters meet the core in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "collector"
DRIVERS = ("aiobotocore", "botocore", "asyncpg", "pgserver", "collector.adapters")
# The composition root and the CLI's preflights; the adapters and the simulator (an
# HTTP server of its own) are outside the core.
ALLOWED = {"wiring.py", "cli.py"}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _core_modules() -> list[Path]:
    return [
        p for p in sorted(ROOT.rglob("*.py"))
        if not {"adapters", "simulator"} & set(p.relative_to(ROOT).parts)
        and p.relative_to(ROOT).as_posix() not in ALLOWED
    ]


def test_the_core_imports_no_driver_and_no_adapter() -> None:
    offenders = {
        p.relative_to(ROOT).as_posix(): sorted(m for m in _imports(p) if m.startswith(DRIVERS))
        for p in _core_modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) > 20  # the walk found the core


def test_nothing_above_the_adapters_catches_bare_exception() -> None:
    caught = []
    for p in _core_modules():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ExceptHandler) and (
                node.type is None or (isinstance(node.type, ast.Name) and node.type.id in ("Exception", "BaseException"))
            ):
                caught.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert caught == []


# The floors of the package, bottom up (the README's "Layout"): a module imports only
# modules on lower floors, or modules of its own room (a package: apis, simulator),
# which must not import each other in a circle. The TYPE_CHECKING imports and the
# imports inside functions count too.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("collector", "errors", "durations", "quotas", "validation", "logs", "observability", "schema", "model",
     "clock", "adapters"),
    ("ports", "sqlfiles"),
    ("retry", "calendar", "guard"),
    ("ratelimit", "progress"),
    ("apis",),  # apis.v1.*, apis.v2.*: the metric API port's implementations
    ("config",),
    ("fetch", "writer"),
    ("pipeline",),
    ("runtime",),
    ("fleet", "scheduler", "leases"),
    ("runs", "http_api"),
    ("service",),
    ("adapters.connect", "adapters.embedded", "adapters.postgres", "terminal"),
    ("simulator",),
    ("wiring",),
    ("cli",),
    ("__main__",),
)


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in sorted(ROOT.rglob("*.py"))}


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import mod`` names ``pkg.mod``)."""
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                plain = [a for a in node.names if f"{node.module}.{a.name}" not in modules]
                deps |= subs | ({node.module} if plain else set())
        out[name] = deps - {name}
    return out


def _floor(module: str) -> tuple[int, str]:
    """(floor, room) of a module: the longest entry of FLOORS that names it or a package of it."""
    rel = module.removeprefix("collector.") if module != "collector" else "collector"
    best: tuple[int, str] | None = None
    for n, names in enumerate(FLOORS):
        for room in names:
            if (rel == room or rel.startswith(room + ".")) and (best is None or len(room) > len(best[1])):
                best = (n, room)
    assert best is not None, f"{module} is on no floor: add it to FLOORS (and the README's Layout)"
    return best


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                found.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_the_package_has_no_import_circle() -> None:
    edges = _edges(_modules())
    assert len(edges) > 40
    assert _cycles(edges) == []


def test_imports_only_point_down() -> None:
    upward = []
    for m, deps in _edges(_modules()).items():
        fm, room = _floor(m)
        for d in sorted(deps):
            fd, droom = _floor(d)
            if fd > fm or (fd == fm and room != droom):
                upward.append(f"{m} (floor {fm}) imports {d} (floor {fd})")
    assert upward == []


def test_the_checks_catch_a_circle_and_an_upward_import() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _floor("collector.ports")[0] < _floor("collector.scheduler")[0] < _floor("collector.wiring")[0]
    assert _floor("collector.apis.v2.planner") == (4, "apis")


def test_the_core_never_asks_which_metric_api_it_serves() -> None:
    """The scheduler, runs, fleet, pipeline, fetch, writer and the store name no API kind
    and import no API package: they see profiles through the MetricApi port."""
    core = ["scheduler", "runs", "fleet", "pipeline", "fetch", "writer", "adapters/postgres", "service"]
    words = ("GetMetricDataV2", "V2Api", "V1Api", "apis.v1", "apis.v2", '"v2"', "'v2'", "V2Profile")
    found = {
        f"{name}.py: {w}": 1 for name in core
        for w in words if w in (ROOT / f"{name}.py").read_text(encoding="utf-8")
    }
    assert found == {}
