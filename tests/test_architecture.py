"""The architecture the project keeps (docs/architecture.md): one
direction, input -> kernel state -> renderers -> FUSE or directory, and
no import circles.  Every import counts, also one inside a function."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('mmcore', 'procfs', 'mmemu')


def _modules():
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob('*.py'):
            parts = list(p.relative_to(ROOT).with_suffix('').parts)
            if parts[-1] == '__init__':
                parts.pop()
            mods['.'.join(parts)] = p
    return mods


def _imports(mods):
    edges = {}
    for name, path in mods.items():
        package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
        deps = set()
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    base = package.split('.')[:len(package.split('.')) - (n.level - 1)]
                    mod = '.'.join(base + ([n.module] if n.module else []))
                else:
                    mod = n.module
                cands = [mod] + [mod + '.' + a.name for a in n.names]
            elif isinstance(n, ast.Import):
                cands = [a.name for a in n.names]
            else:
                continue
            deps |= {c for c in cands if c in mods and c != name}
        edges[name] = deps
    return edges


def _cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_imports(_modules())) == []


def test_the_core_imports_no_renderer():
    edges = _imports(_modules())
    bad = {m: sorted(d for d in deps if not d.startswith('mmcore'))
           for m, deps in edges.items() if m.startswith('mmcore')}
    assert {m: d for m, d in bad.items() if d} == {}


def test_a_circle_is_found():
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
