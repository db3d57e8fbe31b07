"""Contract helpers: the committed TensorRT API surfaces (``tools/trt_surface.py``), the ``tensorrt`` uses of the
device code found by walking its AST, and a stand-in ``tensorrt`` module generated from one surface.

This proves names, signatures and types against NVIDIA's real bindings, never that TensorRT builds or runs: the
stand-in checks every call against the pybind11 signatures and returns a stand-in of the declared type, and computes
nothing. Used by ``test_trt_contract.py``.
"""
import ast
import json
import re
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SURFACES = sorted((ROOT / 'tests' / 'data' / 'tensorrt' / 'surfaces').glob('tensorrt-*.json'),
                  key=lambda p: tuple(int(x) for x in p.stem.split('-')[1].split('.')))
DEVICE_CODE = sorted((ROOT / 'scalablevit' / 'device').glob('*.py')) + [ROOT / 'tests' / 'test_trt_gpu.py']


def load_surface(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def members(surface: Dict[str, Any], cls: str) -> Dict[str, str]:
    """Every name on ``cls`` and its bases -> 'method' | 'property' | 'member' | 'attribute'."""
    found: Dict[str, str] = {}
    entry = surface['classes'][cls]
    for base in entry['bases']:
        found.update(members(surface, base))
    for kind, key in (('method', 'methods'), ('property', 'properties'), ('member', 'members'),
                      ('attribute', 'attributes')):
        found.update(dict.fromkeys(entry.get(key, {}), kind))
    return found


def has_name(surface: Dict[str, Any], owner: str, name: str) -> bool:
    if owner == 'tensorrt':
        return any(name in surface[k] for k in ('classes', 'functions', 'constants'))
    return owner in surface['classes'] and name in members(surface, owner)


def class_name(surface: Dict[str, Any], text: str) -> Optional[str]:
    """The surface class a signature's type names, or None. pybind11 prints the C++ name of a type registered after
    the function ('nvonnxparser::IParserError' is ParserError, 'nvinfer1::ILogger::Severity' ILogger.Severity)."""
    name = re.sub(r'^nv\w+::', '', text.strip()).replace('::', '.')
    for candidate in (name, name[1:] if name.startswith('I') else None):
        if candidate in surface['classes']:
            return candidate
    return None


# ============================================================================================ AST walk
class Use:
    """One ``tensorrt`` name the code reaches: ``owner`` is 'tensorrt' or a class, ``name`` None when dynamic."""

    def __init__(self, owner: str, name: Optional[str], where: str, guarded: bool, source: str = ''):
        self.owner, self.name, self.where, self.guarded, self.source = owner, name, where, guarded, source

    @property
    def key(self) -> str:
        return f"{self.owner}.{self.name if self.name is not None else '<' + self.source + '>'}"

    def __repr__(self) -> str:
        return f"{self.key} ({self.where}{', guarded' if self.guarded else ''})"


def _return_type(signature: str) -> str:
    return signature.rpartition(' -> ')[2].strip() if ' -> ' in signature else 'object'


class UseFinder:
    """Types expressions flow-insensitively: 'mod' (the tensorrt module: ``import tensorrt as X``, a parameter or
    attribute named ``trt``/``_trt``), 'cls:X' (a tensorrt class), 'X' (an instance, from return and property types
    of ``surface``), 'list:X', 'py:C' (a project class from annotations, with its fields from ``C(field=...)``)."""

    def __init__(self, surface: Dict[str, Any], files: List[Path]):
        self.surface, self.uses, self.fields = surface, [], {}
        self.trees = {f: ast.parse(f.read_text(), str(f)) for f in files}
        self.params: Dict[str, Dict[str, str]] = {}  # function name -> parameter -> type, from its calls
        self.returns: Dict[str, str] = {}
        found = None
        while found != len(self.uses):  # parameter, return and field types propagate: repeat until nothing new
            found, self.uses = len(self.uses), []
            for path, tree in self.trees.items():
                self._module(path, tree)

    def _module(self, path: Path, tree: ast.Module) -> None:
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                selfenv: Dict[str, str] = {}
                methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
                for method in methods.values():
                    self._function(path, method, selfenv, methods)
            elif isinstance(node, ast.FunctionDef):
                self._function(path, node, {}, {})

    def _function(self, path: Path, fn: ast.FunctionDef, selfenv: Dict[str, str], methods: Dict[str, Any]) -> None:
        self._path, called, env = path, self.params.get(fn.name, {}), {}
        for i, arg in enumerate(fn.args.args + fn.args.kwonlyargs):
            kind = 'mod' if arg.arg == 'trt' else called.get(arg.arg) or called.get(f'#{i}') or \
                self._annotation(arg.annotation)
            if kind:
                env[arg.arg] = kind
        self.returns[fn.name] = self._annotation(fn.returns) or self.returns.get(fn.name)
        scope = (env, selfenv, methods)
        self._guards = {(id(inner), ast.unparse(n.test.args[0]), ast.unparse(n.test.args[1]))
                        for n in ast.walk(fn) if isinstance(n, ast.If) and isinstance(n.test, ast.Call)
                        and getattr(n.test.func, 'id', None) == 'hasattr' for b in n.body for inner in ast.walk(b)}
        nodes = sorted((n for n in ast.walk(fn) if hasattr(n, 'lineno')), key=lambda n: (n.lineno, n.col_offset))
        for node in nodes:
            if isinstance(node, ast.Import):
                env.update({a.asname or a.name: 'mod' for a in node.names if a.name == 'tensorrt'})
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                    for t, v in zip(target.elts, value.elts):
                        self._assign(t, self._type(v, scope), env, selfenv)
                else:
                    self._assign(target, self._type(value, scope), env, selfenv)
            elif isinstance(node, ast.Call):
                self._call(node, scope)
            elif isinstance(node, ast.Return) and node.value is not None and not self.returns.get(fn.name):
                self.returns[fn.name] = self._type(node.value, scope)  # an unannotated (Any) return
        for node in nodes:
            if isinstance(node, ast.Attribute):
                base = self._type(node.value, scope)
                if base:
                    self._record(base, node.attr, f'{path.name}:{node.lineno}', False)

    def _assign(self, target: ast.AST, kind: Optional[str], env: Dict[str, str], selfenv: Dict[str, str]) -> None:
        if not kind:
            return
        if isinstance(target, ast.Name):
            env[target.id] = kind
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == 'self':
            selfenv[target.attr] = kind

    def _annotation(self, node: Optional[ast.AST]) -> Optional[str]:
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == 'Optional':
            return self._annotation(node.slice)
        if isinstance(node, ast.Name) and node.id[:1].isupper() and node.id not in ('Any', 'Path'):
            return f'py:{node.id}'
        return None

    def _record(self, base: str, name: str, where: str, guarded: bool, source: str = '') -> None:
        owner = 'tensorrt' if base == 'mod' else base.split(':')[-1] if not base.startswith(('py:', 'list:')) else None
        if owner:
            self.uses.append(Use(owner, name, where, guarded, source))

    def _call(self, node: ast.Call, scope: Tuple) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ('getattr', 'hasattr') and len(node.args) >= 2:
            base = self._type(node.args[0], scope)
            guarded = func.id == 'hasattr' or len(node.args) == 3 or \
                (id(node), ast.unparse(node.args[0]), ast.unparse(node.args[1])) in self._guards  # if hasattr(x, n)
            where = f'{self._path.name}:{node.lineno}'
            if base and isinstance(node.args[1], ast.Constant):
                self._record(base, node.args[1].value, where, guarded)
            elif base:
                self._record(base, None, where, guarded, ast.unparse(node.args[1]))
        elif isinstance(func, ast.Name) or (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                                            and func.value.id == 'self'):  # a project function, method or class
            name = func.id if isinstance(func, ast.Name) else func.attr
            offset = 0 if isinstance(func, ast.Name) else 1  # a method's first parameter is self
            table = self.params.setdefault(name, {})
            for i, arg in enumerate(node.args):
                kind = self._type(arg, scope)
                if kind:
                    table[f'#{i + offset}'] = kind
            for kw in node.keywords:
                kind = self._type(kw.value, scope)
                if kw.arg and kind:
                    table[kw.arg] = kind
                    self.fields.setdefault(name, {})[kw.arg] = kind

    def _type(self, node: ast.AST, scope: Tuple) -> Optional[str]:
        env, selfenv, methods = scope
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            if node.attr in ('trt', '_trt'):
                return 'mod'
            if isinstance(node.value, ast.Name) and node.value.id == 'self':
                return selfenv.get(node.attr)
            return self._member_type(self._type(node.value, scope), node.attr)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                return self.returns.get(func.id)
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == 'self' \
                    and func.attr in methods:
                return self._annotation(methods[func.attr].returns)
            callee = self._type(func, scope)
            if callee and callee.startswith('cls:'):
                return callee[4:]
            return callee[5:] if callee and callee.startswith('call:') else None
        if isinstance(node, ast.ListComp):
            elt = self._type(node.elt, scope)
            return f'list:{elt}' if elt else None
        if isinstance(node, ast.Subscript):
            base = self._type(node.value, scope)
            return base[5:] if base and base.startswith('list:') else None
        return None

    def _member_type(self, base: Optional[str], name: str) -> Optional[str]:
        """The type of ``base.name``: a class object, an instance, or 'call:R' for a method returning R."""
        classes = self.surface['classes']
        if base == 'mod':
            return f'cls:{name}' if name in classes else None
        if base and base.startswith('py:'):
            return self.fields.get(base[3:], {}).get(name)
        owner = base[4:] if base and base.startswith('cls:') else base
        if owner not in classes:
            return None
        if f'{owner}.{name}' in classes:
            return f'cls:{owner}.{name}'
        if base.startswith('cls:') and name in classes[owner].get('members', {}):
            return owner
        return self._instance_member(owner, name)

    def _instance_member(self, owner: str, name: str) -> Optional[str]:
        entry = self.surface['classes'][owner]
        if name in entry['properties']:
            kind = self._clean(entry['properties'][name]['type'])
        elif name in entry['methods']:
            kind = 'call:' + (self._clean(_return_type(entry['methods'][name][0])) or '')
        elif name in entry['attributes']:
            kind = self._clean(entry['attributes'][name].rsplit('.', 1)[0])
        else:
            return next((k for b in entry['bases'] if (k := self._instance_member(b, name))), None)
        return kind if kind and kind != 'call:' else None

    def _clean(self, kind: str) -> Optional[str]:
        return class_name(self.surface, re.sub(r'^(?:typing\.)?Optional\[(.*)\]$', r'\1', kind))


def find_uses(surface: Dict[str, Any], files: List[Path] = DEVICE_CODE) -> List[Use]:
    """Every tensorrt name ``files`` reach, typed with ``surface``'s return and property types."""
    return UseFinder(surface, files).uses


# ============================================================================================ stand-in
class ContractError(TypeError):
    """A call, property write or scenario value that the surface's signatures do not allow."""


def parse_signature(text: str) -> Tuple[List[Tuple[str, Optional[str], bool]], str]:
    """'(self: X, a: int, b: str = 0) -> R' -> ([('a', 'int', False), ('b', 'str', True)], 'R'); self dropped.

    pybind11's unnamed arguments ('arg0') and those before '/' are positional-only: their names get a leading '#'.
    """
    inner, _, returns = text.partition(') -> ')
    params, depth, piece = [], 0, ''
    for ch in inner.lstrip('(').rstrip(')') + ',':
        depth += ch in '[(<' and 1 or (ch in '])>' and -1 or 0)
        if ch == ',' and depth == 0:
            params.append(piece.strip())
            piece = ''
        else:
            piece += ch
    out = []
    for p in filter(None, params):
        if p == '/':
            out = [('#' + n.lstrip('#'), t, d) for n, t, d in out]
            continue
        head, has_default, _ = p.partition(' = ')
        name, _, kind = head.partition(':')
        out.append(('#' + name if re.fullmatch(r'arg\d+', name) else name.strip(), kind.strip() or None,
                    bool(has_default)))
    if out and out[0][0].lstrip('#') in ('self', 'this'):
        out = out[1:]
    return out, returns.strip() or 'object'


class StandIn:
    """A ``tensorrt`` module made from one surface: classes with the surface's methods, properties and enums.

    Every call is bound against the pybind11 overloads (arity, keywords, argument types where named), every property
    write checked against its writability and type; results are stand-ins of the declared type, or the test's
    scenario ``values`` ('Class.member' -> value, or a callable of (stand-in, self, *args)), themselves checked
    against the declared type. ``calls`` records what was called.
    """

    def __init__(self, surface: Dict[str, Any], values: Optional[Dict[str, Any]] = None):
        self.surface, self.values, self.calls = surface, dict(values or {}), []
        self.module = types.ModuleType('tensorrt')
        self.classes: Dict[str, type] = {}
        for name in surface['classes']:
            self._class(name)
        module = self.module
        for name, kind in surface['constants'].items():
            setattr(module, name, self._constant(kind))
        module.__version__ = surface['provenance']['version']
        for name, sigs in surface['functions'].items():
            setattr(module, name, self._method(None, name, sigs))
        module.nptype = self._nptype

    # ----------------------------------------------------------------------------------- classes
    def _class(self, name: str) -> type:
        if name in self.classes:
            return self.classes[name]
        entry = self.surface['classes'][name]
        bases = tuple(self._class(b) for b in entry['bases']) or ((_BufferRoot,) if entry['buffer'] else (_Root,))
        namespace = {'__slots__': () if not entry['buffer'] else (), '_surface': name, '_standin': self}
        for method, sigs in entry.get('methods', {}).items():
            namespace[method] = self._method(name, method, sigs)
        for prop, spec in entry.get('properties', {}).items():
            namespace[prop] = self._property(name, prop, spec)
        cls = type(name.rsplit('.', 1)[-1], bases, namespace)
        cls.__qualname__ = name
        self.classes[name] = cls
        if 'members' in entry:
            cls.__members__ = {m: _make(cls, _enum=(m, v)) for m, v in entry['members'].items()}
            for m, member in cls.__members__.items():
                setattr(cls, m, member)
        for attr, kind in entry.get('attributes', {}).items():
            setattr(cls, attr, self._class(f'{name}.{attr}') if kind == 'class' else self._constant(kind))
        if '.' in name:
            setattr(self.classes[name.rsplit('.', 1)[0]], name.rsplit('.', 1)[1], cls) \
                if name.rsplit('.', 1)[0] in self.classes else None
        else:
            setattr(self.module, name, cls)
        return cls

    def _constant(self, kind: str) -> Any:
        owner, _, member = kind.rpartition('.')
        if owner in self.surface['classes'] and member in self.surface['classes'][owner].get('members', {}):
            return self._class(owner).__members__[member]
        return self.default(kind)

    def _method(self, owner: Optional[str], name: str, sigs: List[str]) -> Callable:
        standin, parsed = self, [parse_signature(s) for s in sigs]
        is_init = name == '__init__'

        def call(*args: Any, **kwargs: Any) -> Any:
            this, rest = (args[0], args[1:]) if owner else (None, args)
            problems = []
            for params, returns in parsed:
                problem = standin.bind(params, rest, kwargs)
                if problem is None:
                    standin.calls.append((f'{owner}.{name}' if owner else name, rest, kwargs))
                    if is_init:
                        if returns == 'object':  # '(self, /, *args, **kwargs)': pybind11's "No constructor"
                            raise TypeError(f'{owner}: No constructor defined!')
                        object.__setattr__(this, '_state', {})
                        return None
                    return standin.result(f'{owner}.{name}' if owner else name, returns, this, rest)
                problems.append(problem)
            raise ContractError(f"{owner + '.' if owner else ''}{name}(): incompatible arguments {rest} {kwargs}: "
                                + '; '.join(f'{sig}: {why}' for sig, why in zip(sigs, problems)))
        call.__name__ = name
        return call

    def _property(self, owner: str, name: str, spec: Dict[str, Any]) -> property:
        standin = self

        def get(this: Any) -> Any:
            state = this._state
            return state[name] if name in state else standin.result(f'{owner}.{name}', spec['type'], this, ())

        def put(this: Any, value: Any) -> None:
            if not spec['writable']:
                raise AttributeError(f"{owner}.{name} is read-only in TensorRT {standin.module.__version__}")
            params, _ = parse_signature(spec['setter'])
            kind = params[-1][1] if params else None
            if not standin.accepts(kind, value):
                raise ContractError(f'{owner}.{name} = {value!r}: TensorRT wants {kind}')
            standin.calls.append((f'{owner}.{name}=', (value,), {}))
            this._state[name] = value
        return property(get, put)

    def _nptype(self, trt_type: Any) -> Any:
        """``tensorrt.nptype`` as the wheel's own table (recorded by the surface tool) says."""
        if not isinstance(trt_type, self.classes['DataType']):
            raise TypeError(f'nptype: {trt_type!r} is not a DataType')
        found = self.surface['nptype'][trt_type.name]
        if found.startswith('raises '):
            raise TypeError(f'Could not resolve TensorRT datatype to an equivalent numpy datatype. {trt_type}')
        return np.dtype(found).type

    # ----------------------------------------------------------------------------------- types
    def bind(self, params: List[Tuple[str, Optional[str], bool]], args: Tuple, kwargs: Dict[str, Any]
             ) -> Optional[str]:
        """None when ``args``/``kwargs`` fit ``params``, else why not."""
        if any(n.lstrip('#').startswith('*') for n, _, _ in params):  # '*args, **kwargs': anything goes
            return None
        if len(args) > len(params):
            return f'{len(args)} positional arguments, at most {len(params)}'
        given = dict(zip(range(len(args)), args))
        for key, value in kwargs.items():
            index = next((i for i, (n, _, _) in enumerate(params) if n == key), None)
            if index is None:
                return f"no keyword argument '{key}'"
            if index in given:
                return f"'{key}' given twice"
            given[index] = value
        for i, (name, kind, has_default) in enumerate(params):
            if i not in given:
                if not has_default:
                    return f"missing argument '{name.lstrip('#')}'"
            elif not self.accepts(kind, given[i]):
                return f"'{name.lstrip('#')}' is {type(given[i]).__name__}, wants {kind}"
        return None

    def accepts(self, kind: Optional[str], value: Any) -> bool:
        """Whether pybind11 would take ``value`` for an argument of type ``kind`` (unknown types: yes)."""
        if kind is None:
            return True
        kind = re.sub(r'^typing\.|^collections\.abc\.', '', kind.strip())
        m = re.fullmatch(r'(Optional)\[(.*)\]|(.*) \| None', kind)
        if m:
            return value is None or self.accepts(m.group(2) or m.group(3), value)
        m = re.fullmatch(r'(?:List|list|Sequence|Iterable|tuple|Tuple)\[(.*?)(?:, \.\.\.)?\]', kind)
        if m:
            return isinstance(value, (list, tuple)) and all(self.accepts(m.group(1), v) for v in value)
        if kind in ('int', 'SupportsInt'):
            return isinstance(value, (int, np.integer)) or getattr(value, '_enum', None) is not None
        if kind in ('float', 'SupportsFloat'):
            return isinstance(value, (int, float, np.floating, np.integer))
        if kind == 'str':
            return isinstance(value, str)
        if kind == 'bool':
            return isinstance(value, (bool, np.bool_))
        if kind in ('buffer', 'typing_extensions.Buffer', 'Buffer'):
            try:
                memoryview(value)
            except TypeError:
                return False
            return True
        cls = class_name(self.surface, kind)
        if cls is None:
            return True  # 'object', 'capsule', a C++ name pybind11 could not print: not checked
        return isinstance(value, self.classes[cls]) or self._converts(cls, value)

    def _converts(self, cls: str, value: Any) -> bool:
        """pybind11's implicit conversion, approximated: a constructor that takes ``value`` alone (Dims from a
        tuple). Enums never convert."""
        entry = self.surface['classes'][cls]
        if 'members' in entry or isinstance(value, _Root):
            return False
        inits = [parse_signature(s)[0] for s in entry.get('methods', {}).get('__init__', [])]
        return any(len(p) == 1 and self.accepts(p[0][1], value) for p in inits)

    def result(self, key: str, kind: str, this: Any, args: Tuple) -> Any:
        """The scenario's value for ``key`` (checked against ``kind``), else a stand-in of ``kind``."""
        for owner in ([type(this)] + [c for c in type(this).__mro__ if hasattr(c, '_surface')]) if this is not None \
                else []:
            name = f"{getattr(owner, '_surface', '')}.{key.rsplit('.', 1)[1]}"
            if name in self.values:
                value = self.values[name]
                value = value(self, this, *args) if callable(value) else value
                if not self.accepts(kind, value):
                    raise ContractError(f'scenario value {value!r} for {name} is not a {kind}')
                return value
        return self.default(kind)

    def default(self, kind: str) -> Any:
        kind = re.sub(r'^typing\.|^collections\.abc\.', '', kind.strip())
        m = re.fullmatch(r'Optional\[(.*)\]|(.*) \| None', kind)
        if m:
            return self.default(m.group(1) or m.group(2))
        simple = {'None': None, 'int': 0, 'float': 0.0, 'str': '', 'bool': True, 'bytes': b''}
        if kind in simple:
            return simple[kind]
        if re.match(r'(List|list|Sequence)\[', kind):
            return []
        if re.match(r'(Tuple|tuple)\[', kind):
            return ()
        cls = class_name(self.surface, kind)
        if cls is None:
            return None
        members = self.surface['classes'][cls].get('members')
        return self.classes[cls].__members__[min(members, key=members.get)] if members else _make(self.classes[cls])


class _Root:
    """Base of the stand-in classes: no attributes beyond the surface's (Python subclasses get a __dict__)."""

    __slots__ = ('_state', '_enum')

    def __repr__(self) -> str:
        enum = getattr(self, '_enum', None)
        return f'<{type(self).__qualname__}.{enum[0]}: {enum[1]}>' if enum else f'<stand-in {type(self).__qualname__}>'

    def _member(self, i: int) -> Any:
        if getattr(self, '_enum', None) is None:
            raise TypeError(f'{type(self).__qualname__} is not an enum')
        return self._enum[i]

    name = property(lambda self: self._member(0))
    value = property(lambda self: self._member(1))
    __int__ = __index__ = lambda self: self._member(1)

    def __eq__(self, other: Any) -> bool:
        return self is other or (type(other) is type(self) and getattr(self, '_enum', None) is not None
                                 and self._enum == getattr(other, '_enum', None))

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, getattr(self, '_enum', id(self))))


class _BufferRoot(bytes):
    """Base of the classes with the buffer protocol (IHostMemory): an empty buffer, no bytes methods."""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith('_') and not hasattr(_Root, name) and name not in type(self).__dict__ and \
                not any(name in vars(c) for c in type(self).__mro__ if c not in (bytes, object, _BufferRoot)):
            raise AttributeError(f'{type(self).__qualname__} has no attribute {name!r}')
        return bytes.__getattribute__(self, name)


def _make(cls: type, _enum: Optional[Tuple[str, int]] = None) -> Any:
    """An instance made the way TensorRT returns one (no Python constructor call)."""
    obj = bytes.__new__(cls) if issubclass(cls, bytes) else object.__new__(cls)
    object.__setattr__(obj, '_state', {})
    object.__setattr__(obj, '_enum', _enum)
    return obj
