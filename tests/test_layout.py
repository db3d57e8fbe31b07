"""The package's shape: subpackages by role, in one order, with the device boundary held by structure.

Every import counts, at module top or inside a function (the AST of the whole file is walked), because a lazy
import still runs on the machine that calls it. The rules:

* packages stand in one order (``ORDER``); a package imports only packages before it (``ALLOWED``): nothing
  reaches up, so there is no cycle between packages;
* ``core`` imports no subpackage; ``device`` imports only ``core``, and what the device package reaches, itself
  and through the core, is the standard library, numpy, tensorrt and a CUDA binding: never torch, onnx,
  onnxruntime or modelopt (a Jetson often has neither);
* no import cycle between modules; no module over ``MAX_LINES`` lines.
"""
import ast
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'scalablevit'
ORDER = ('core', 'data', 'models', 'device', 'host', 'benchmarks', 'serve', 'cli')
ALLOWED = {
    'core': {'core'},
    'data': {'core', 'data'},
    'models': {'core', 'data', 'models'},
    'device': {'core', 'device'},
    'host': {'core', 'data', 'models', 'device', 'host'},
    'benchmarks': {'core', 'data', 'models', 'device', 'host', 'benchmarks'},
    'serve': {'core', 'data', 'models', 'device', 'host', 'benchmarks', 'serve'},
    'cli': set(ORDER),
}
# What the device package may reach beyond the standard library, directly or through the core.
DEVICE_EXTERNALS = {'numpy', 'tensorrt', 'cuda', 'pycuda'}
# The core beyond the standard library: numpy; matplotlib inside the plot functions, tqdm inside the progress bar
# (both optional, both imported only when drawn).
CORE_EXTERNALS = {'numpy', 'matplotlib', 'tqdm'}
MAX_LINES = 700


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(source: str, name: str, is_package: bool, modules: Set[str]) -> Tuple[Set[str], Set[str]]:
    """(package modules, external top-level packages) that ``source`` imports anywhere in its body."""
    package = name if is_package else name.rsplit('.', 1)[0]
    internal, external = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                target = '.'.join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module
            if target.split('.')[0] != 'scalablevit':
                external.add(target.split('.')[0])
                continue
            for alias in node.names:  # `from pkg import module` names a module, `from module import x` does not
                internal.add(f'{target}.{alias.name}' if f'{target}.{alias.name}' in modules else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split('.')[0]
                (internal if top == 'scalablevit' else external).add(alias.name if top == 'scalablevit' else top)
    return internal & modules, external - set(sys.stdlib_module_names) - {'__future__'}


def read_package() -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]]]:
    paths = {module_name(p): p for p in PACKAGE.rglob('*.py')}
    internal, external = {}, {}
    for name, path in paths.items():
        deps, ext = imports_of(path.read_text(), name, path.name == '__init__.py', set(paths))
        internal[name], external[name] = deps - {name}, ext
    return internal, external


def subpackage(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else ''


def reached(start: str, graph: Dict[str, Set[str]]) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def layering_problems(internal: Dict[str, Set[str]]) -> List[str]:
    """Every import from one subpackage into one it may not import, as 'a.b -> c.d (pkg may import ...)'."""
    problems = []
    for module, deps in sorted(internal.items()):
        own = subpackage(module)
        if not own:
            continue
        for dep in sorted(deps):
            other = subpackage(dep)
            if other and other not in ALLOWED[own]:
                problems.append(f"{module} -> {dep} ({own} may import only {', '.join(sorted(ALLOWED[own]))})")
    return problems


def device_problems(internal: Dict[str, Set[str]], external: Dict[str, Set[str]]) -> List[str]:
    """What the device package reaches, itself or through what it imports, beyond its allowance."""
    problems = []
    for module in sorted(m for m in internal if subpackage(m) == 'device'):
        for dep in sorted(reached(module, internal)):
            if subpackage(dep) not in ('core', 'device'):
                problems.append(f'{module} reaches {dep}')
            for ext in sorted(external.get(dep, set()) - DEVICE_EXTERNALS):
                problems.append(f'{module} reaches {ext} (through {dep})')
    return problems


def cycle(graph: Dict[str, Set[str]]) -> List[str]:
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


def test_every_module_lives_in_a_subpackage_of_the_order():
    internal, _ = read_package()
    loose = sorted(m for m in internal if m != 'scalablevit' and subpackage(m) not in ORDER)
    assert loose == []
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / '__init__.py').exists()} == set(ORDER)


def test_no_package_reaches_up():
    internal, _ = read_package()
    assert layering_problems(internal) == []


def test_the_device_package_reaches_only_the_core_numpy_tensorrt_and_cuda():
    internal, external = read_package()
    assert 'scalablevit.core.bundle' in reached('scalablevit.device.pipeline', internal)  # the walk follows imports
    assert device_problems(internal, external) == []


def test_the_core_imports_no_subpackage_and_only_numpy():
    internal, external = read_package()
    core = [m for m in internal if subpackage(m) == 'core']
    assert [f'{m} -> {d}' for m in core for d in internal[m] if subpackage(d) != 'core'] == []
    assert {m: sorted(external[m] - CORE_EXTERNALS) for m in core if external[m] - CORE_EXTERNALS} == {}


def test_no_import_cycles():
    internal, _ = read_package()
    assert cycle(internal) == []
    assert cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']  # the check finds one


def test_no_module_is_over_the_size_limit():
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob('*.py')}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize('line, found', [
    ('import torch', 'scalablevit.device.engine reaches torch (through scalablevit.device.engine)'),
    ('from ..models.scalablevit import create_model',
     'scalablevit.device.engine reaches scalablevit.models.scalablevit'),
    ('from ..core import plots', 'scalablevit.device.engine reaches matplotlib (through scalablevit.core.plots)'),
])
def test_the_boundary_checks_catch_a_device_module_that_imports_torch(line, found):
    """A lazy import inside a function of engine.py (as a careless edit would add) breaks the boundary."""
    internal, external = read_package()
    path = PACKAGE / 'device' / 'engine.py'
    source = path.read_text() + f'\n\ndef _careless():\n    {line}\n'
    deps, ext = imports_of(source, 'scalablevit.device.engine', False, set(internal))
    internal['scalablevit.device.engine'], external['scalablevit.device.engine'] = deps, ext
    assert found in device_problems(internal, external)
    if 'models' in line:
        assert any(p.startswith('scalablevit.device.engine -> scalablevit.models') for p in layering_problems(internal))
