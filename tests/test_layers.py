"""The package's layers (docs/architecture.md): no module imports a layer above its own.

Every module under src/tipline is parsed (stdlib ``ast`` only, nothing is imported), with the
imports inside functions, ``if TYPE_CHECKING:`` blocks and ``importlib.import_module("...")``
calls with a literal name. A module may import its own package, any package of a lower layer,
and a package of its own layer only along a declared :data:`PEER_EDGES` edge. Everything else
fails, printed as ``module -> imported module`` with both layers.

Known violations are in :data:`ALLOWED`, each with why it is there; an allowlisted edge that no
longer exists fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Bottom to top. Each entry is one layer: the packages of ``tipline`` in it. ``tipline`` stands
#: for the top-level modules (errors, config, os_utils, record, findings): the shared types and
#: settings everything may use.
LAYERS: list[tuple[str, ...]] = [
    ("tipline",),
    ("media",),
    ("signals",),
    ("index",),
    ("provenance", "scan"),
    # audit and accounts (tipline.accounts: users, tokens, roles) are rows in the service
    # database (store.tables), used by review, actions, the service and the CLI, so they sit
    # beside the store
    ("banks", "store", "audit", "accounts"),
    ("triage",),
    # demo: an end-to-end run of the library (scan, banks, store) behind `tipline demo`, so it
    # sits with the other users of the lower layers, just below the entry points
    # net: fetching a URL under the SSRF policy (used by webhooks, exchanges, the pipeline)
    # exchange: fetching partners' hash lists into banks (over net.fetch's SSRF policy)
    ("review", "actions", "net", "demo", "exchange"),
    # the report pipeline's stages: fetch (net), webhooks (actions), triage; no HTTP
    # removal: locations, hosting attribution, cases, evidence, notices, re-checks (it uses
    # net.fetch, the webhooks and exports of actions, grades and the audit chain)
    ("pipeline", "removal"),
    # crawl: following reported sites; every page and media file goes through the pipeline's
    # analysis, and matched pages feed the removal loop (locations, evidence)
    ("crawl",),
    ("service", "cli"),
]

#: Imports allowed between two packages of one layer (importer, imported). The reverse stays
#: forbidden; an undeclared pair (review -> actions, say) fails.
PEER_EDGES: set[tuple[str, str]] = {
    ("scan", "provenance"),  # scanning runs the provenance analysers
    ("store", "banks"),  # the SQL bank store implements the bank model
    ("audit", "store"),  # audit events are store rows
    ("accounts", "store"),  # users and tokens are store rows
    ("actions", "net"),  # webhook deliveries go through net.fetch's SSRF policy
    ("exchange", "net"),  # http_list fetches through net.fetch's SSRF policy
    ("cli", "service"),  # `tipline serve`, `tipline user`, ... run the service
}

#: The top-level modules of the bottom layer (``tipline`` in LAYERS). A new top-level module
#: has no layer until it is named here or in MODULE_PACKAGE.
BOTTOM_MODULES = {
    "tipline",
    "tipline.errors",
    "tipline.config",
    "tipline.os_utils",
    "tipline.record",
    "tipline.findings",
    "tipline.registry",
}

#: Modules that belong to a package other than their path says.
MODULE_PACKAGE = {
    "tipline.__main__": "cli",  # `python -m tipline` is the CLI
    "tipline.accounts": "accounts",  # a module, not a package, but a concern above the store
}

#: Known violations, (importer, imported): why each is still here. Only ever remove entries.
ALLOWED: dict[tuple[str, str], str] = {}


def _layer_of() -> dict[str, int]:
    out: dict[str, int] = {}
    for i, packages in enumerate(LAYERS):
        for p in packages:
            assert p not in out, f"{p} is in two layers"
            out[p] = i
    return out


LAYER_OF = _layer_of()


@dataclass(frozen=True, slots=True)
class Violation:
    importer: str
    imported: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line}): {self.why}"


def package_of(module: str) -> str:
    """``tipline.review.grading`` -> ``review``; a module of BOTTOM_MODULES -> ``tipline``; an
    unplaced top-level module -> its own name (in no layer)."""
    if module in MODULE_PACKAGE:
        return MODULE_PACKAGE[module]
    if module in BOTTOM_MODULES:
        return "tipline"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and _is_package(parts)) else module


def _is_package(parts: list[str]) -> bool:
    return (SRC.joinpath(*parts) / "__init__.py").is_file()


def source_modules(root: Path = SRC) -> dict[str, tuple[str, bool]]:
    """Every module under ``root/tipline``: name -> (source, is a package ``__init__``)."""
    out: dict[str, tuple[str, bool]] = {}
    for path in sorted((root / "tipline").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path.read_text(encoding="utf-8"), is_pkg)
    return out


def imports(
    module: str, source: str, is_pkg: bool, known: Mapping[str, object]
) -> Iterator[tuple[str, int]]:
    """``(imported tipline module, line)`` for every import anywhere in ``source``."""
    seen: set[tuple[str, int]] = set()
    for target, line in _imports(module, source, is_pkg, known):
        if (target, line) not in seen:
            seen.add((target, line))
            yield target, line


def _imports(
    module: str, source: str, is_pkg: bool, known: Mapping[str, object]
) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:  # `from tipline.cli import state` imports tipline.cli.state
                sub = f"{target}.{alias.name}"
                yield (sub if sub in known else target), node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def violations(modules: Mapping[str, tuple[str, bool]]) -> list[Violation]:
    """Every import in ``modules`` that runs upward or sideways to an undeclared peer."""
    found: list[Violation] = []
    for module, (source, is_pkg) in sorted(modules.items()):
        mine = package_of(module)
        for imported, line in imports(module, source, is_pkg, modules):
            if imported != "tipline" and not imported.startswith("tipline."):
                continue
            theirs = package_of(imported)
            if theirs == mine:
                continue
            for p in (mine, theirs):
                if p not in LAYER_OF:
                    found.append(Violation(module, imported, line, f"{p} is in no layer"))
            if mine not in LAYER_OF or theirs not in LAYER_OF:
                continue
            a, b = LAYER_OF[mine], LAYER_OF[theirs]
            if a < b:
                why = f"{mine} (layer {a}) imports {theirs} (layer {b}, above)"
            elif a == b and (mine, theirs) not in PEER_EDGES:
                why = f"{mine} imports its peer {theirs} (layer {a}; not in PEER_EDGES)"
            else:
                continue
            found.append(Violation(module, imported, line, why))
    return found


def test_no_import_runs_up_the_layers() -> None:
    found = violations(source_modules())
    new = [v for v in found if (v.importer, v.imported) not in ALLOWED]
    assert not new, "imports against the layers (docs/architecture.md):\n" + "\n".join(
        map(str, new)
    )


def test_the_allowlist_only_shrinks() -> None:
    present = {(v.importer, v.imported) for v in violations(source_modules())}
    gone = sorted(set(ALLOWED) - present)
    assert not gone, "fixed, so remove from ALLOWED in tests/test_layers.py:\n" + "\n".join(
        f"{a} -> {b}" for a, b in gone
    )


def test_every_package_has_a_layer() -> None:
    packages = {package_of(m) for m in source_modules()}
    assert packages <= set(LAYER_OF), f"add to LAYERS: {sorted(packages - set(LAYER_OF))}"
    for a, b in PEER_EDGES:
        assert LAYER_OF[a] == LAYER_OF[b] and (b, a) not in PEER_EDGES


@pytest.mark.parametrize(
    "source",
    [
        "from tipline.service.app import create_app\n",
        "def f():\n    import tipline.service.app\n",
        "import typing\nif typing.TYPE_CHECKING:\n    from tipline.service import app\n",
        "import importlib\nimportlib.import_module('tipline.service.app')\n",
        "from ..service import app\n",
    ],
)
def test_the_checker_catches_an_upward_import(source: str) -> None:
    modules = source_modules()
    modules["tipline.media.fake"] = (source, False)
    new = [v for v in violations(modules) if v.importer == "tipline.media.fake"]
    assert [(v.imported, v.why) for v in new] == [
        ("tipline.service.app", "media (layer 1) imports service (layer 10, above)")
    ]


def test_the_checker_catches_an_undeclared_peer_and_allows_downward() -> None:
    modules = {
        "tipline.review.fake": ("from tipline.actions import webhooks\n", False),
        "tipline.service.fake": ("from tipline.review import grading\nimport tipline\n", False),
        "tipline.review.grading": ("", False),
        "tipline.actions.webhooks": ("", False),
    }
    [v] = violations(modules)
    assert (v.importer, v.imported) == ("tipline.review.fake", "tipline.actions.webhooks")
    assert "peer" in str(v) and "line 1" in str(v)


def test_a_new_top_level_module_needs_a_layer() -> None:
    modules = {"tipline.newthing": ("from tipline.errors import TiplineError\n", False)}
    assert [str(v) for v in violations(modules)] == [
        "tipline.newthing -> tipline.errors (line 1): tipline.newthing is in no layer"
    ]
