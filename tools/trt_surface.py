"""Read the Python API surface of TensorRT's bindings wheels from PyPI on a CPU machine, as deterministic JSON.

A bindings wheel (``tensorrt-bindings==8.6.1``, ``tensorrt-cu12-bindings==10.x/11.x``, ~1.2 MB) holds the real
pybind11 extension; its TensorRT libraries come in ``-libs`` packages that cannot be installed here. The extension
needs only a few unversioned C entry points from them (``createInferBuilder_INTERNAL``, ...). This tool builds
tiny stub libraries with those symbols under the sonames the extension NEEDs (gcc), each stub calling ``abort()``,
loads them with RTLD_GLOBAL in a child process and imports the module: that it imports at all proves module init
calls none of them. It writes every class (bases, buffer protocol), method and constructor with its pybind11
signatures (docstring prose dropped), property with type and writability, enum with members, module function and
constant, plus ``nptype``'s table (pure Python in the wheel), with the wheel's name, sha256 and version.

    python tools/trt_surface.py                # download the wheels (pip) and rewrite tests/data/tensorrt/surfaces
    python tools/trt_surface.py --check        # rebuild each surface from its wheel, compare byte for byte
    python tools/trt_surface.py --wheel W.whl  # print one wheel's surface

Needs CPython 3.11 on x86_64 (the surfaces are read from the cp311 manylinux x86_64 wheels), numpy, gcc, nm, pip.
"""
import argparse
import ctypes
import enum
import hashlib
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SURFACES = ROOT / 'tests' / 'data' / 'tensorrt' / 'surfaces'
FORMAT = 'scalablevit-trt-surface/1'
# (pip requirement, why it is here). 10.8/10.9 bracket SAME_COMPUTE_CAPABILITY (compat.HARDWARE_COMPAT_MIN_TENSORRT).
WHEELS = (
    ('tensorrt-bindings==8.6.1', 'JetPack 6.0'),
    ('tensorrt-cu12-bindings==10.3.0', 'JetPack 6.1/6.2'),
    ('tensorrt-cu12-bindings==10.8.0.43', 'last release without SAME_COMPUTE_CAPABILITY'),
    ('tensorrt-cu12-bindings==10.9.0.34', 'first release with SAME_COMPUTE_CAPABILITY'),
    ('tensorrt-cu12-bindings==10.13.3.9', 'JetPack 7.0/7.1'),
    ('tensorrt-cu12-bindings==10.16.1.11', 'JetPack 7.2, newest 10.x'),
    ('tensorrt-cu12-bindings==11.4.0.106', 'newest 11.x'),
)
PYTHON_TAG, PLATFORMS = 'cp311', ('manylinux_2_28_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64')
# Names the module prefixes signatures with, dropped so signatures read the same in every release.
_PREFIX = re.compile(r'\b(?:tensorrt_bindings|tensorrt)\.(?:tensorrt\.)?')
# Dunder methods the device code can reach (constructors, sequences, context managers); the rest is pybind11's.
_DUNDERS = {'__init__', '__len__', '__getitem__', '__setitem__', '__iter__', '__enter__', '__exit__', '__call__'}


class SurfaceError(Exception):
    """A wheel, a tool or a platform this tool cannot work with; the message names it."""


# ============================================================================================ parent side
def stub_symbols(extension: Path) -> list:
    """The extension's undefined, unversioned, strong symbols that this process does not already provide."""
    out = subprocess.run(['nm', '-D', '--undefined-only', str(extension)], check=True, capture_output=True,
                         text=True).stdout
    here = ctypes.CDLL(None)
    names = (line.split()[-1] for line in out.splitlines() if line.split()[:1] == ['U'])
    return sorted(n for n in names if '@' not in n and not hasattr(here, n))


def needed_sonames(extension: Path) -> list:
    """The NEEDED sonames of the extension that are TensorRT's own (libnv*)."""
    out = subprocess.run(['readelf', '-d', str(extension)], check=True, capture_output=True, text=True).stdout
    return sorted(re.findall(r'\(NEEDED\)\s+Shared library: \[(libnv[^\]]+)\]', out))


def build_stubs(symbols: list, sonames: list, where: Path) -> list:
    """One stub library per soname; the first exports every symbol as a function that aborts."""
    source = where / 'stubs.c'
    source.write_text('#include <stdlib.h>\n' + ''.join(f'void {s}(void) {{ abort(); }}\n' for s in symbols))
    empty = where / 'empty.c'
    empty.write_text('int scalablevit_trt_stub;\n')
    libs = []
    for i, soname in enumerate(sonames):
        lib = where / soname
        subprocess.run(['gcc', '-shared', '-fPIC', '-o', str(lib), f'-Wl,-soname,{soname}',
                        str(source if i == 0 else empty)], check=True, capture_output=True)
        libs.append(lib)
    return libs


def read_wheel(wheel: Path) -> dict:
    """The surface of one bindings wheel, read in a child process."""
    if sys.implementation.name != 'cpython' or sys.version_info[:2] != (3, 11) or platform.machine() != 'x86_64':
        raise SurfaceError('the surfaces are read from cp311 x86_64 wheels: run this tool with CPython 3.11 on '
                           f'x86_64 (this is {platform.python_implementation()} {platform.python_version()} on '
                           f'{platform.machine()})')
    with tempfile.TemporaryDirectory(prefix='trt-surface-') as tmp:
        tmp = Path(tmp)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp / 'site')
        extensions = sorted((tmp / 'site').glob('*/tensorrt*.so'))
        if len(extensions) != 1:
            raise SurfaceError(f'{wheel.name}: expected one tensorrt extension module, found {extensions}')
        symbols = stub_symbols(extensions[0])
        libs = build_stubs(symbols, needed_sonames(extensions[0]), tmp)
        child = subprocess.run([sys.executable, __file__, '--child', str(tmp / 'site'), extensions[0].parent.name,
                                *map(str, libs)], capture_output=True, text=True)
        if child.returncode != 0:
            raise SurfaceError(f'{wheel.name}: importing the module failed (exit {child.returncode}): '
                               f'{child.stderr.strip().splitlines()[-1:] or "no message"}')
        surface = json.loads(child.stdout)
    surface['provenance'] = {'wheel': wheel.name, 'sha256': hashlib.sha256(wheel.read_bytes()).hexdigest(),
                             'version': surface.pop('version'), 'stubbed_symbols': symbols,
                             'stub_sonames': [lib.name for lib in libs]}
    return surface


def dump(surface: dict) -> str:
    return json.dumps(surface, sort_keys=True, indent=1, ensure_ascii=True) + '\n'


def surface_path(version: str) -> Path:
    return SURFACES / f'tensorrt-{version}.json'


def download(requirement: str, cache: Path) -> Path:
    """The cp311 x86_64 wheel of ``requirement`` in ``cache`` (pip download when missing)."""
    name, version = requirement.split('==')
    pattern = f"{name.replace('-', '_')}-{version}-{PYTHON_TAG}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        platforms = [arg for p in PLATFORMS for arg in ('--platform', p)]
        subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:',
                        '--python-version', '3.11', *platforms, '-d', str(cache), requirement], check=True)
        found = sorted(cache.glob(pattern))
    if len(found) != 1:
        raise SurfaceError(f'{requirement}: expected one wheel {pattern} in {cache}, found {len(found)}')
    return found[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true', help='compare the committed surfaces with the wheels')
    parser.add_argument('--wheel', type=Path, help='print the surface of this one wheel')
    parser.add_argument('--cache', type=Path, default=Path.home() / '.cache' / 'scalablevit' / 'trt-wheels')
    if len(sys.argv) > 1 and sys.argv[1] == '--child':
        return child_main(sys.argv[2], sys.argv[3], sys.argv[4:])
    args = parser.parse_args(argv)
    try:
        if args.wheel:
            sys.stdout.write(dump(read_wheel(args.wheel)))
            return 0
        args.cache.mkdir(parents=True, exist_ok=True)
        stale = []
        for requirement, _ in WHEELS:
            text = dump(read_wheel(download(requirement, args.cache)))
            path = surface_path(json.loads(text)['provenance']['version'])
            if args.check:
                same = path.is_file() and path.read_text() == text
                print(f"{path.relative_to(ROOT)}: {'same' if same else 'DIFFERS'}")
                stale += [] if same else [path.name]
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + '.tmp')
                tmp.write_text(text)
                tmp.replace(path)
                print(f'{path.relative_to(ROOT)}: {len(text)} bytes')
        if stale:
            raise SurfaceError(f"{', '.join(stale)} differ from the wheels: regenerate with tools/trt_surface.py")
    except (SurfaceError, OSError, subprocess.CalledProcessError, zipfile.BadZipFile) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


# ============================================================================================ child side
def child_main(site: str, package: str, libs: list) -> int:
    for lib in libs:
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    sys.path.insert(0, site)
    module = __import__(package)
    json.dump(module_surface(module), sys.stdout)
    return 0


def clean(text: str) -> str:
    return _PREFIX.sub('', text)


def signatures(obj, name: str) -> list:
    """pybind11 signatures '(self: Builder, logger: ILogger) -> None' (one per overload), or Python's own."""
    doc = getattr(obj, '__doc__', None) or ''
    lines = [ln.strip() for ln in doc.splitlines()]
    if len(lines) > 1 and lines[1] == 'Overloaded function.':
        found = [m.group(1) for ln in lines if (m := re.match(rf'\d+\. {re.escape(name)}(\(.*)$', ln))]
    else:
        found = [lines[0][len(name):]] if lines and lines[0].startswith(name + '(') else []
    if not found:
        try:
            found = [str(inspect.signature(obj))]
        except (TypeError, ValueError):
            found = ['(*args, **kwargs)']
    return [clean(s) for s in found]


def _type_name(cls) -> str:
    return clean(f'{cls.__module__}.{cls.__qualname__}') if cls.__module__ != 'builtins' else cls.__qualname__


def is_enum(cls) -> bool:
    return (isinstance(cls, type) and issubclass(cls, enum.Enum)) or isinstance(getattr(cls, '__members__', None),
                                                                                 dict)


def has_buffer(cls) -> bool:
    """Whether instances support the buffer protocol (``memoryview(obj)``): PyTypeObject.tp_as_buffer is set."""
    offset = 20 * ctypes.sizeof(ctypes.c_void_p)  # CPython 3.11 layout: the 21st pointer-sized field
    read = lambda t: ctypes.c_void_p.from_address(id(t) + offset).value  # noqa: E731
    if not read(bytes) or read(int):
        raise SurfaceError('PyTypeObject layout is not the one this tool knows')
    return bool(read(cls))


def class_surface(cls, qualname: str, out: dict) -> None:
    entry = {'bases': [_type_name(b) for b in cls.__bases__ if b.__module__ != 'builtins'
                       and 'pybind11' not in b.__name__],
             'buffer': has_buffer(cls), 'methods': {}, 'properties': {}, 'attributes': {}}
    if is_enum(cls):  # members only: every enum has the same name/value/int/compare/hash machinery
        entry['members'] = {k: int(v.value if isinstance(v, enum.Enum) else v) for k, v in cls.__members__.items()}
        out[qualname] = entry
        return
    for name, raw in sorted(vars(cls).items()):
        if name.startswith('__') and name not in _DUNDERS or name.startswith('_pybind11'):
            continue
        if isinstance(raw, property):
            setter = signatures(raw.fset, '') if raw.fset else []
            entry['properties'][name] = {'type': _return_type(signatures(raw.fget, '')[0]), 'writable': bool(raw.fset),
                                         **({'setter': setter[0]} if setter else {})}
        elif isinstance(raw, type):
            class_surface(raw, f'{qualname}.{name}', out)
            entry['attributes'][name] = 'class'
        elif callable(getattr(cls, name)) or isinstance(raw, (staticmethod, classmethod)):
            entry['methods'][name] = signatures(getattr(cls, name), name)
        else:
            entry['attributes'][name] = value_type(raw)
    out[qualname] = entry


def value_type(value) -> str:
    """'str', or 'DataType.FLOAT' for an enum member (``tensorrt.float32``, ``Logger.WARNING``)."""
    kind = _type_name(type(value))
    return f'{kind}.{value.name}' if is_enum(type(value)) else kind


def _return_type(signature: str) -> str:
    return signature.rpartition(' -> ')[2] if ' -> ' in signature else 'object'


def module_surface(module) -> dict:
    classes, functions, constants, modules = {}, {}, {}, []
    for name in sorted(dir(module)):
        value = getattr(module, name)
        if name.startswith('__') and name != '__version__':
            continue
        if isinstance(value, type):
            if _type_name(value).split('.')[0] == value.__qualname__.split('.')[0]:
                class_surface(value, name, classes)
            else:  # a foreign class imported by __init__.py (warnings, ...)
                constants[name] = _type_name(type(value))
        elif inspect.ismodule(value):
            modules.append(name)
        elif callable(value):
            functions[name] = signatures(value, name)
        else:
            constants[name] = value_type(value)
    return {'format': FORMAT, 'version': module.__version__, 'classes': classes, 'functions': functions,
            'constants': constants, 'modules': modules, 'nptype': nptype_table(module)}


def nptype_table(module) -> dict:
    """``nptype(DataType.X)`` for every member: the numpy type name, or the exception it raises."""
    table = {}
    for name, member in module.DataType.__members__.items():
        try:
            table[name] = __import__('numpy').dtype(module.nptype(member)).name
        except Exception as e:  # noqa: BLE001 (recorded, whatever it is)
            table[name] = f'raises {type(e).__name__}'
    return table


if __name__ == '__main__':
    sys.exit(main())
