"""The package's shape: no import cycle between modules, lazy (function-level) imports included."""
import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / 'scalablevit'


def _imports() -> Dict[str, Set[str]]:
    """Module -> the package modules it imports anywhere in its body (function-level imports count too)."""
    graph = {}
    for path in PACKAGE.rglob('*.py'):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
                targets = [f'{base}.{node.module}'] if node.module else [f'{base}.{a.name}' for a in node.names]
                deps.update(targets)
            elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('scalablevit'):
                deps.add(node.module)
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []
    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_no_import_cycles():
    graph = _imports()
    assert 'scalablevit.device' in graph and 'scalablevit.engine' in graph['scalablevit.device']
    assert _cycle(graph) == []
    # the check itself finds a cycle when there is one
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']

