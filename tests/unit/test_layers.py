"""Import arrows point the right way: parsed with ast, nothing is imported.

Every `import x` and `from x import y` counts, at any nesting level (inside functions, under
TYPE_CHECKING, in try/except), with relative imports resolved. Only direct imports count: a
module that imports a grpc-using module is not itself a grpc importer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

RUNTIME = ("cloud_service/", "device_agent/", "tandem_core/", "protos/")
OFFLINE = ("training", "localrun", "loadtest", "simulator", "tests")
IO = ("grpc", "fastapi", "starlette", "uvicorn", "redis")
PURE = (
    "cloud_service/federated/aggregate.py",
    "cloud_service/federated/robust.py",
    "cloud_service/federated/rounds.py",
    "cloud_service/federated/defences.py",
    "cloud_service/federated/contribution.py",
    "cloud_service/domain.py",
    "cloud_service/errors.py",
    "cloud_service/services/",
    "tandem_core/federated/",
    "device_agent/policy/",
)
DEVICE_INFERENCE = (
    "device_agent/inference/",
    "device_agent/policy/",
    "device_agent/session/",
    "device_agent/service.py",
    "device_agent/api/",
)

# (applies to: path prefixes, except: path prefixes, must not import: top-level modules)
# A prefix ending in "/" is a folder (everything below it); otherwise it is one file.
RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("device_agent/",), (), ("cloud_service",)),
    (("cloud_service/",), (), ("device_agent",)),
    (("cloud_service/api/",), (), ("cloud_service.rpc",)),  # the transports share wire.py only
    (("cloud_service/rpc/",), (), ("cloud_service.api",)),
    (RUNTIME, (), OFFLINE),
    (("tandem_core/",), (), ("cloud_service", "device_agent", *IO)),
    (("tandem_core/",), ("tandem_core/models/",), ("torch",)),
    (("protos/",), (), ("tandem_core", "cloud_service", "device_agent")),
    (PURE, (), (*IO, "torch")),
    (DEVICE_INFERENCE, (), ("torch",)),
    (("training/",), (), ("localrun", "loadtest")),
)

PACKAGES = (
    "cloud_service",
    "device_agent",
    "tandem_core",
    "protos",
    "training",
    "simulator",
    "localrun",
    "loadtest",
    "tests",
)


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    imported: str
    banned: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.imported} (must not import {self.banned})"


def _module_name(rel: str) -> tuple[str, bool]:
    """'a/b/c.py' -> ('a.b.c', False); 'a/b/__init__.py' -> ('a.b', True)."""
    parts = rel[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports_of(source: str, rel: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) for every import in the source of the file at `rel`.

    `from x import y` yields both `x` and `x.y` (y may be a submodule).
    """
    module, is_package = _module_name(rel)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                if up > len(package):
                    raise ValueError(f"{rel}:{node.lineno}: relative import beyond the top")
                base = ".".join(package[: len(package) - up])
                target = ".".join(p for p in (base, node.module or "") if p)
            else:
                target = node.module or ""
            if target:
                found.append((node.lineno, target))
            found.extend(
                (node.lineno, f"{target}.{alias.name}" if target else alias.name)
                for alias in node.names
                if alias.name != "*"
            )
    return found


def _applies(rel: str, prefixes: tuple[str, ...]) -> bool:
    return any(rel.startswith(p) if p.endswith("/") else rel == p for p in prefixes)


def _matches(imported: str, banned: str) -> bool:
    return imported == banned or imported.startswith(banned + ".")


def check_source(source: str, rel: str) -> list[Violation]:
    rules = [
        banned
        for where, unless, banned in RULES
        if _applies(rel, where) and not _applies(rel, unless)
    ]
    if not rules:
        return []
    seen: set[tuple[int, str]] = set()
    out: list[Violation] = []
    for line, imported in imports_of(source, rel):
        for banned in {b for group in rules for b in group}:
            if _matches(imported, banned) and (line, banned) not in seen:
                seen.add((line, banned))
                out.append(Violation(rel, line, imported, banned))
    return sorted(out, key=lambda v: (v.path, v.line, v.banned))


def check_tree(root: Path) -> list[Violation]:
    out: list[Violation] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            out.extend(check_source(path.read_text(encoding="utf-8"), rel))
    return out


def test_imports_point_the_right_way() -> None:
    violations = check_tree(ROOT)
    assert not violations, "layer violations:\n" + "\n".join(map(str, violations))


def test_rules_name_real_paths() -> None:
    """A rule whose path was renamed away would silently check nothing."""
    for where, unless, _ in RULES:
        for prefix in (*where, *unless):
            assert (ROOT / prefix).exists(), f"rule names a missing path: {prefix}"


def test_checker_reports_a_bad_import(tmp_path: Path) -> None:
    bad = tmp_path / "tandem_core" / "federated" / "update.py"
    bad.parent.mkdir(parents=True)
    (bad.parent / "__init__.py").write_text("")
    bad.write_text(
        "import numpy as np\n"
        "\n"
        "def decode():\n"
        "    from ...cloud_service.errors import InvalidUpdate\n"
        "    import torch.nn\n"
        "    from . import privacy\n"
    )
    found = {str(v) for v in check_tree(tmp_path)}
    assert found == {
        "tandem_core/federated/update.py:4 imports cloud_service.errors "
        "(must not import cloud_service)",
        "tandem_core/federated/update.py:5 imports torch.nn (must not import torch)",
    }


@pytest.mark.parametrize(
    ("rel", "source", "banned"),
    [
        ("device_agent/service.py", "from cloud_service import domain\n", "cloud_service"),
        ("cloud_service/api/app.py", "import device_agent.policy\n", "device_agent"),
        ("cloud_service/main.py", "from localrun.demo import main\n", "localrun"),
        ("protos/vectors.py", "from tandem_core.models import din\n", "tandem_core"),
        ("cloud_service/errors.py", "import grpc\n", "grpc"),
        ("cloud_service/api/routers/x.py", "from ...rpc import servicer\n", "cloud_service.rpc"),
        ("cloud_service/api/routers/x.py", "from cloud_service.wire import pb\n", None),
        ("cloud_service/services/recommend.py", "from redis import Redis\n", "redis"),
        ("device_agent/inference/models.py", "import torch\n", "torch"),
        ("training/ranker/train.py", "from loadtest import feed\n", "loadtest"),
        ("tandem_core/models/din.py", "from starlette import types\n", "starlette"),
        ("cloud_service/federated/sub/x.py", "from ...errors import E\n", None),
        ("device_agent/policy/value.py", "from .. import service\n", None),
        ("tandem_core/models/din.py", "import torch\n", None),
        ("cloud_service/rpc/server.py", "import grpc\n", None),
        ("device_agent/trainer/loop.py", "import torch\n", None),
        ("training/ranker/train.py", "import simulator\n", None),
    ],
)
def test_rule_table(rel: str, source: str, banned: str | None) -> None:
    got = [v.banned for v in check_source(source, rel)]
    assert got == ([banned] if banned else [])
