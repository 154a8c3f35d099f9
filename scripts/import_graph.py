"""The package's module graph from its source (ast only; nothing is imported): files, import arrows, circles.

    python scripts/import_graph.py [SRC_DIR]          # default src/tinydiffusion
    git archive 151e4c9 src | tar -x -C /tmp/old && python scripts/import_graph.py /tmp/old/src/tinydiffusion
    python scripts/import_graph.py --edges            # also every arrow, importer -> imported

An arrow is one file importing another file of the package, at module level or inside a function (a lazy
import is still a dependency). `from . import x` points at x.py when x is a module, else at the package's
__init__.py. A circle is a strongly connected group of two or more files. tests/test_layout.py uses
`import_edges` to check the import rules of the layout.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    """src/tinydiffusion/cli/main.py -> tinydiffusion.cli.main; a package's __init__.py -> the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(root: Path) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of one package module by another, sorted."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    modules = {module_name(p, root): p for p in files}
    edges = set()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from ..x import y: climb level - 1 packages above this file's package
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] or [base]
            for target in targets:
                hit = _resolve(target, modules)
                if hit and hit != name:
                    edges.add((name, hit, node.lineno))
    return sorted(edges)


def circles(arrows: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with two or more modules (Tarjan 1972)."""
    graph: dict[str, list[str]] = {}
    for a, b in arrows:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def room(module: str) -> str:
    """The top-level room of a module: tinydiffusion.cli.main -> tinydiffusion.cli (a folder is one room)."""
    return ".".join(module.split(".")[:2])


def summary(root: Path) -> dict:
    """Files, lines, arrows and circles between files, and the same between rooms (top-level files and folders)."""
    root = Path(root)
    files = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    arrows = {(a, b) for a, b, _ in import_edges(root)}
    rooms = {room(module_name(p, root)) for p in files}
    room_arrows = {(room(a), room(b)) for a, b in arrows if room(a) != room(b)}
    return dict(files=len(files), lines=sum(len(p.read_text().splitlines()) for p in files),
                arrows=len(arrows), circles=circles(arrows), rooms=len(rooms), room_arrows=len(room_arrows),
                room_circles=circles(room_arrows))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = Path(args[0] if args else Path(__file__).resolve().parents[1] / "src" / "tinydiffusion")
    s = summary(root)
    print(f"{root}: {s['files']} files, {s['lines']} lines, {s['arrows']} import arrows between files, "
          f"{len(s['circles'])} circles")
    for c in s["circles"]:
        print("  circle: " + " <-> ".join(c))
    print(f"  {s['rooms']} rooms (top-level files and folders), {s['room_arrows']} arrows between rooms, "
          f"{len(s['room_circles'])} circles between rooms")
    for c in s["room_circles"]:
        print("  room circle: " + " <-> ".join(c))
    if "--edges" in sys.argv:
        for a, b in sorted({(a, b) for a, b, _ in import_edges(root)}):
            print(f"  {a} -> {b}")
