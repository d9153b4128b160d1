"""The import layers of engine/, desktop/ and main.py, read from the source (AST), so the next wing cannot bend
them back silently.

Every import counts, also one inside a function (a lazy import is still a dependency). A module may import
modules of its own layer or lower ones, never a higher one; no two packages, and no two modules, may import each
other, directly or round a circle; and the torch-free inference packages never import the torch networks beside
them.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from conftest import REPO_ROOT

# Lowest first. A name stands for that module or package and everything below it.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["engine", "engine.errors", "engine.fileio", "engine.bundle", "engine.runtime", "engine.dataset",
                    "engine.masks", "engine.schedulers", "engine.text", "engine.samples"]),
    ("networks | inference", ["engine.models", "engine.pipelines", "engine.retrieval", "engine.captioning",
                              "engine.judge", "engine.transplant"]),
    ("torch: networks in, bundles out", ["engine.export", "engine.training"]),
    ("orchestration and labs", ["engine.jobs", "engine.metrics", "engine.evaluation", "engine.doctor",
                                "engine.demo"]),
    ("entry: command line and UI", ["engine.cli", "desktop", "main"]),
]
# Inference packages that must stay torch-free: they never import the torch floor beside them or above them.
TORCH_FREE = ["engine.pipelines", "engine.retrieval", "engine.captioning", "engine.judge", "engine.transplant",
              "engine.runtime",
              "engine.bundle", "engine.dataset", "engine.masks", "engine.schedulers", "engine.text"]
TORCH_CODE = ["engine.models", "engine.export", "engine.training", "engine.evaluation"]


def _module_name(root: Path, path: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def source_modules(root: Path) -> dict[str, Path]:
    paths = [*(root / "engine").rglob("*.py"), *(root / "desktop").rglob("*.py"), root / "main.py"]
    return {_module_name(root, p): p for p in paths if "__pycache__" not in p.parts}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` imports (anywhere in the file), each resolved to the longest known
    module name ("from engine.jobs.spec import X" → engine.jobs.spec)."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        candidates: list[str] = []
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from engine.cli import args" imports the module engine.cli.args when there is one, else a name
            # of the package engine.cli
            candidates = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix
                          for alias in node.names]
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def _owner(module: str, names: list[str]) -> str | None:
    """The longest declared name that ``module`` is or lies under."""
    matches = [n for n in names if module == n or module.startswith(n + ".")]
    return max(matches, key=len) if matches else None


def layer_of(module: str) -> int:
    owners = [(len(owner), index) for index, (_, names) in enumerate(LAYERS) if (owner := _owner(module, names))]
    if not owners:
        raise AssertionError(f"{module} is in no declared layer: add it to LAYERS in tests/test_layering.py")
    return max(owners)[1]


def package_of(module: str) -> str:
    return _owner(module, [n for _, names in LAYERS for n in names]) or module


def violations(root: Path) -> list[str]:
    modules = source_modules(root)
    found: list[str] = []
    package_edges: dict[str, set[str]] = {}
    module_edges: dict[str, set[str]] = {}
    for name, path in sorted(modules.items()):
        module_edges[name] = imports_of(name, path, modules)
        for target in sorted(module_edges[name]):
            if layer_of(target) > layer_of(name):
                found.append(f"{path.relative_to(root)}: {name} ({LAYERS[layer_of(name)][0]}) imports {target} "
                             f"({LAYERS[layer_of(target)][0]}), a higher layer")
            if _owner(name, TORCH_FREE) and _owner(target, TORCH_CODE):
                found.append(f"{path.relative_to(root)}: {name} (torch-free inference) imports {target} (torch code)")
            if package_of(name) != package_of(target):
                package_edges.setdefault(package_of(name), set()).add(package_of(target))
    found += [f"import circle between packages: {' -> '.join(cycle)}" for cycle in _cycles(package_edges)]
    # Inside a package too (between packages the line above says it): a package's __init__ that imports its own
    # modules is not a circle with them.
    inner = {name: {t for t in targets if package_of(t) == package_of(name)
                    and not (t == package_of(name) and modules[t].name == "__init__.py")}
             for name, targets in module_edges.items()}
    found += [f"import circle between modules: {' -> '.join(cycle)}" for cycle in _cycles(inner)]
    return found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One path round each strongly connected group of packages (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group) + [sorted(group)[0]])

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_the_tree_keeps_its_layers():
    assert violations(REPO_ROOT) == []


def test_every_module_is_in_a_layer():
    for name in source_modules(REPO_ROOT):
        layer_of(name)  # raises with the module's name


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    (tmp_path / "main.py").touch()
    return tmp_path


@pytest.mark.parametrize("bad_import, expected", [
    ("from engine.jobs.spec import JobSpec", "imports engine.jobs.spec (orchestration and labs), a higher layer"),
    ("def later():\n    import engine.models.compact_unet", "(torch-free inference) imports engine.models.compact_unet"),
    ("from ..cli import args", "imports engine.cli.args (entry: command line and UI), a higher layer"),
])
def test_an_import_against_the_layers_fails(tmp_path, bad_import, expected):
    """A pipeline reaching up (to the job layer, a torch network or the CLI) is reported with its file."""
    root = _tree(tmp_path, {
        "engine/__init__.py": "", "engine/jobs/__init__.py": "", "engine/jobs/spec.py": "JobSpec = 1\n",
        "engine/models/__init__.py": "", "engine/models/compact_unet.py": "",
        "engine/cli/__init__.py": "", "engine/cli/args.py": "",
        "engine/pipelines/__init__.py": "", "engine/pipelines/compact.py": bad_import + "\n",
    })
    found = violations(root)
    assert len(found) == 1 and found[0].startswith("engine/pipelines/compact.py: engine.pipelines.compact")
    assert expected in found[0]


def test_a_circle_between_modules_of_one_package_fails(tmp_path):
    root = _tree(tmp_path, {
        "engine/__init__.py": "",
        "engine/training/__init__.py": "", "engine/training/runs.py": "from engine.training import task_a\n",
        "engine/training/task_a.py": "def f():\n    from engine.training.runs import pick\n",
    })
    assert violations(root) == ["import circle between modules: engine.training.runs -> engine.training.task_a -> "
                                "engine.training.runs"]


def test_a_circle_between_packages_fails(tmp_path):
    root = _tree(tmp_path, {
        "engine/__init__.py": "",
        "engine/pipelines/__init__.py": "", "engine/pipelines/a.py": "from engine.retrieval import b\n",
        "engine/retrieval/__init__.py": "", "engine/retrieval/b.py": "def f():\n    from engine.pipelines import a\n",
    })
    assert violations(root) == ["import circle between packages: engine.pipelines -> engine.retrieval -> engine.pipelines"]
