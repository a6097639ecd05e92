"""The house plan as a checked fact: imports point down the layers only.

    opsflows.cli, bench, tests        may import anything (devstack only inside a command)
    deployments                       how runs start
    flows                             one module per runbook; never another flow
    procedures                        sub-procedures several runbooks share
    tasks                             retryable steps by system; vendor errors translated here
    decisions | blocks                pure decisions (no vendor SDK, no Prefect I/O) | typed config
    opsflows (core)                   errors, retry, settings, data_path_settings, oplog,
                                      thresholds

Nothing outside ``devstack/``, ``bench/`` and ``tests/`` imports ``devstack`` at module level;
``opsflows.cli`` imports it inside the ``opsflows devstack|bootstrap|up`` commands only. No
project module is imported through ``importlib`` (``deployments`` load entrypoints by a
computed name: that is what they are for).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("opsflows", "decisions", "blocks", "tasks", "procedures", "flows", "deployments")
PROJECT = (*PACKAGES, "devstack", "bench", "tests")
CORE = frozenset(
    {
        "opsflows.errors",
        "opsflows.retry",
        "opsflows.settings",
        "opsflows.data_path_settings",
        "opsflows.oplog",
        "opsflows.thresholds",
    }
)

#: What each layer may import from the project (its own package is always allowed, except
#: where ``SIBLINGS_FORBIDDEN`` says otherwise).
LAYERS: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "decisions": frozenset({"core"}),
    "blocks": frozenset({"core"}),
    "tasks": frozenset({"core", "decisions", "blocks"}),
    "procedures": frozenset({"core", "decisions", "blocks", "tasks"}),
    "flows": frozenset({"core", "decisions", "blocks", "tasks", "procedures"}),
    "deployments": frozenset({"core", "decisions", "blocks", "tasks", "procedures", "flows"}),
    "cli": frozenset(
        {"core", "decisions", "blocks", "tasks", "procedures", "flows", "deployments", "cli"}
    ),
}
#: A flow never imports another flow: shared steps live in ``procedures``.
SIBLINGS_FORBIDDEN = frozenset({"flows"})
#: Third-party modules a layer must not import (pure decisions do no I/O).
VENDORS_FORBIDDEN: dict[str, tuple[str, ...]] = {
    "decisions": ("boto3", "botocore", "kubernetes", "psycopg", "prefect", "httpx", "moto"),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    lazy: bool  # inside a function body


def layer_of(module: str) -> str | None:
    top = module.split(".")[0]
    if module in CORE or module == "opsflows":
        return "core"
    if top == "opsflows":
        return "cli"
    if top in PACKAGES:
        return top
    return None


def imports_of(module: str, source: str) -> list[Import]:
    """Every import statement of ``source`` (absolute, or resolved when relative)."""
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = module.split(".")[: -child.level]
                    base = ".".join([*parent, base] if base else parent)
                # `from opsflows import errors` names a module of the package
                submodules = [
                    f"{base}.{a.name}" for a in child.names if _is_module(f"{base}.{a.name}")
                ]
                found.extend(Import(module, name, lazy) for name in submodules or [base])
            elif isinstance(child, ast.Call) and _is_import_module(child):
                arg = child.args[0] if child.args else None
                name = arg.value if isinstance(arg, ast.Constant) else "<dynamic>"
                found.append(Import(module, f"importlib:{name}", lazy))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )


def violations(
    imports: Iterable[Import],
    layers: Mapping[str, frozenset[str]] = LAYERS,
    siblings_forbidden: frozenset[str] = SIBLINGS_FORBIDDEN,
    vendors_forbidden: Mapping[str, tuple[str, ...]] = VENDORS_FORBIDDEN,
) -> list[str]:
    """The imports that break the contract, as readable lines."""
    bad: list[str] = []
    for imp in imports:
        source_layer = layer_of(imp.module)
        if source_layer is None:
            continue
        if imp.target.startswith("importlib:"):
            name = imp.target.removeprefix("importlib:")
            # deployments load entrypoints by name: that is their job
            dynamic_ok = name == "<dynamic>" and source_layer == "deployments"
            if (name.split(".")[0] in PROJECT or name == "<dynamic>") and not dynamic_ok:
                bad.append(f"{imp.module}: importlib.import_module({name!r})")
            continue
        top = imp.target.split(".")[0]
        if top == "devstack":
            if not (imp.lazy and source_layer == "cli"):
                bad.append(f"{imp.module} imports {imp.target} (the local stand-ins)")
            continue
        if top in vendors_forbidden.get(source_layer, ()):
            bad.append(f"{imp.module} ({source_layer}) imports the vendor module {imp.target}")
            continue
        target_layer = layer_of(imp.target)
        if target_layer is None or top in ("bench", "tests"):
            if top in ("bench", "tests"):
                bad.append(f"{imp.module} imports {imp.target}")
            continue
        if target_layer == source_layer:
            same_module = imp.target == imp.module or imp.target == source_layer
            if source_layer in siblings_forbidden and not same_module:
                bad.append(f"{imp.module} imports {imp.target}: a {source_layer} module's sibling")
            continue
        if target_layer not in layers[source_layer]:
            bad.append(f"{imp.module} ({source_layer}) imports {imp.target} ({target_layer})")
    return bad


def project_imports() -> list[Import]:
    found: list[Import] = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            found.extend(imports_of(module, path.read_text()))
    return found


def test_the_project_keeps_the_contract() -> None:
    assert violations(project_imports()) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("flows.deploy", "from flows.operate import release", "a flows module's sibling"),
        ("tasks.bake", "from devstack.prometheus import q", "the local stand-ins"),
        ("tasks.kube", "from flows.deploy import x", "(tasks) imports flows.deploy (flows)"),
        ("decisions.deploy", "import kubernetes", "the vendor module kubernetes"),
        ("decisions.deploy", "from tasks.kube import x", "(decisions) imports tasks.kube"),
        ("flows.migrate", "importlib.import_module('flows.backup')", "importlib.import_module"),
        ("opsflows.cli", "from devstack import stack", "the local stand-ins"),
        ("blocks.kube", "from tasks.kube import x", "(blocks) imports tasks.kube"),
    ],
)
def test_a_broken_rule_is_reported(module: str, source: str, expected: str) -> None:
    found = violations(imports_of(module, source))
    assert len(found) == 1 and expected in found[0], found


def test_allowed_imports_pass() -> None:
    lazy_cli = "def cmd():\n    from devstack import stack\n"
    assert violations(imports_of("opsflows.cli", lazy_cli)) == []
    assert violations(imports_of("flows.deploy", "from procedures.release import x")) == []
    assert violations(imports_of("tasks.verify", "from tasks.gx_validation import x")) == []


def test_removing_a_layer_rule_lets_a_known_tangle_through() -> None:
    """Drop the 'a flow never imports another flow' rule and the known example passes."""
    example = imports_of("flows.deploy", "from flows.operate import release_to_production")
    assert violations(example) != []
    assert violations(example, siblings_forbidden=frozenset()) == []
    down = imports_of("tasks.bake", "from flows.operate import x")
    loose = {**LAYERS, "tasks": LAYERS["tasks"] | {"flows"}}
    assert violations(down) != [] and violations(down, layers=loose) == []
