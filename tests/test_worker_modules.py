"""How the runner and its workers' modules depend on each other, read from their source with `ast`
(importing them would hide an import circle that Python resolves by luck): the runner imports the
worker modules, never the other way, and every name is imported from the module that defines it."""

import ast
from pathlib import Path

from identity_crisis.cell_processes import WORKER_MODULE

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "identity_crisis"
RUNNER = "identity_crisis.sweep"
WORKER_SIDE = [
    "identity_crisis.cell_processes",
    "identity_crisis.cell_run",
    "identity_crisis.worker_loop",
    "identity_crisis.wandb_agent",
    "identity_crisis.parent_death",
]
# Where callers of the runner and the workers live.
CALLERS = ["identity_crisis", "tests", "benchmarks", "scripts", "lightning_modules", "datamodules"]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path, package: str) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def imported(path: Path, name: str) -> list[tuple[str, str | None]]:
    """(module, name or None) for every import in the file, at any depth (a function's lazy
    import closes a circle as well), relative ones made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found += [(base, alias.name) for alias in node.names]
    return found


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Each module of `known` -> the modules of `known` it imports."""
    graph = {}
    for name, path in known.items():
        deps = set()
        for base, member in imported(path, name):
            if member and f"{base}.{member}" in known:  # `from package import module`
                deps.add(f"{base}.{member}")
            elif base in known:
                deps.add(base)
        graph[name] = deps - {name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for dep in graph.get(stack.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def defined(path: Path) -> set[str]:
    """The names a module's top level defines itself (not those it imports)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def reexported(known: dict[str, Path], root: Path, homes: list[str]) -> list[str]:
    """'caller: from home import name' for each import, in the callers, of a name that a module
    of `homes` does not define itself."""
    names = {home: defined(known[home]) for home in homes}
    wrong = []
    for folder in CALLERS:
        for path in sorted((root / folder).rglob("*.py")) if (root / folder).is_dir() else []:
            for base, member in imported(path, module_name(path, root)):
                if base in names and member not in names[base] and member != "*":
                    wrong.append(f"{path.relative_to(root)}: from {base} import {member}")
    return wrong


def test_the_worker_modules_never_import_the_runner():
    known = modules(REPO, PACKAGE)
    graph = import_graph(known)
    assert set(WORKER_SIDE) <= set(known), "a worker module was renamed: update WORKER_SIDE"
    assert "identity_crisis.cell_processes" in graph[RUNNER]
    for name in WORKER_SIDE:
        assert RUNNER not in reachable(graph, name), f"{name} imports the runner"
    for name in [RUNNER, *WORKER_SIDE]:
        assert name not in reachable(graph, name), f"{name} is in an import circle"


def test_names_are_imported_from_where_they_are_defined_not_from_the_runner():
    assert not reexported(modules(REPO, PACKAGE), REPO, [RUNNER, *WORKER_SIDE])


def test_only_the_parent_death_adapter_uses_ctypes():
    known = modules(REPO, PACKAGE)
    users = [
        name
        for name, path in known.items()
        if any(base.split(".")[0] == "ctypes" for base, _ in imported(path, name))
    ]
    assert users == ["identity_crisis.parent_death"]


def test_the_runner_starts_a_module_that_exists_and_runs_the_loop():
    path = modules(REPO, PACKAGE)[WORKER_MODULE]
    assert 'if __name__ == "__main__":' in path.read_text()


def test_the_checks_find_a_circle_and_a_reexport(tmp_path):
    """The checks above can fail: a circle through a lazy import, and a name passed on."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "runner.py").write_text("from pkg.worker import go\nfrom os import sep\n")
    (package / "worker.py").write_text("def go():\n    from . import runner\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "caller.py").write_text("from pkg.runner import go, sep\n")
    known = modules(tmp_path, "pkg")
    graph = import_graph(known)
    assert "pkg.runner" in reachable(graph, "pkg.worker")
    assert "pkg.runner" in reachable(graph, "pkg.runner")
    assert reexported(known, tmp_path, ["pkg.runner"]) == [
        "tests/caller.py: from pkg.runner import go",
        "tests/caller.py: from pkg.runner import sep",
    ]
