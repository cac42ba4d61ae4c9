"""The package graph has no import cycles, counting imports inside functions and TYPE_CHECKING
blocks too: a lazy import hides a cycle, it does not remove it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "kernels", "model", "pipeline", "data_prep")
# common (user errors, the CLI wrapper, the config loader) is the floor every package stands on;
# kernels <- model <- pipeline; data_prep stands apart (pipeline may read its formats)
MAY_IMPORT = {"common": {"common"}, "kernels": {"common", "kernels"},
              "model": {"common", "kernels", "model"},
              "pipeline": {"common", "kernels", "model", "pipeline", "data_prep"},
              "data_prep": {"common", "data_prep"}}


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict) -> set[str]:
    """Our modules that `name` imports anywhere in its body."""
    targets = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            prefix = base[:len(base) - node.level + 1] if node.level else []
            module = ".".join(prefix + ([node.module] if node.module else []))
            targets += [module] + [f"{module}.{a.name}" for a in node.names]
    out = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def test_no_import_cycles_and_layers_hold():
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    upward = [f"{a} -> {b}" for a, deps in graph.items() for b in deps
              if b.split(".")[0] not in MAY_IMPORT[a.split(".")[0]]]
    assert upward == []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2
    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
