"""The documentation's links, anchors and module names (issue 22): stdlib only, no package import.

* Every relative markdown link ``[text](target)`` in README.md, docs/*.md, bench/README.md, calib/README.md and the
  weights README points to a file or folder that exists (relative to the .md file), and every ``#anchor`` (in-page
  or ``file.md#anchor``) matches a heading of that file under GitHub's slug rules. Links in fenced code blocks and
  in inline code are not links and are skipped; so are http(s)://, mailto: and other schemes.
* README.md stays a front door: at most 220 lines.
* Every ``scalablevit/...`` path and ``scalablevit.x.y`` dotted name the docs give exists in the package layout of
  issue 22 (``scalablevit/core/``, ``data/``, ``models/``, ``device/``, ``host/``, ``benchmarks/``, ``serve/``,
  ``cli/``); a dotted name that ends in a function, class or constant must be defined in that module.
"""
import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'scalablevit'
README_MAX_LINES = 220


def doc_files() -> List[Path]:
    files = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md')), ROOT / 'bench' / 'README.md',
             ROOT / 'calib' / 'README.md']
    for weights in ('scalablevit/models/weights/README.md', 'scalablevit/weights/README.md'):
        if (ROOT / weights).is_file():
            files.append(ROOT / weights)
    return [f for f in files if f.is_file()]


# ----------------------------------------------------------------------------------------------- markdown

_FENCE = re.compile(r'^\s{0,3}(`{3,}|~{3,})')
_HEADING = re.compile(r'^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
_INLINE_CODE = re.compile(r'(`+)(.+?)\1')
_LINK = re.compile(r'!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
_REF_DEF = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$')
_HTML_ANCHOR = re.compile(r'<a\s+(?:name|id)="([^"]+)"', re.I)


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    fence: Optional[str] = None
    for number, line in enumerate(text.split('\n'), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not line.strip()[len(match.group(1)):].strip():
                fence = None
            continue
        yield number, line


def slug(heading: str) -> str:
    """GitHub's heading anchor: the rendered text (links -> their text, code -> its content), lowercased, every
    character other than a letter, digit, space, '-' or '_' removed, each space turned into '-'."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    text = text.replace('`', '').lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path: Path) -> Set[str]:
    """Every anchor of a markdown file: heading slugs (a repeated slug gets -1, -2, ...) and HTML anchors."""
    seen: Dict[str, int] = {}
    found: Set[str] = set()
    for _, line in prose_lines(path.read_text(encoding='utf-8')):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f'{base}-{count}')
        found.update(_HTML_ANCHOR.findall(line))
    return found


def links(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, target) of every markdown link outside code."""
    for number, line in prose_lines(path.read_text(encoding='utf-8')):
        ref = _REF_DEF.match(line)
        if ref:
            yield number, ref.group(1)
            continue
        plain = _INLINE_CODE.sub(lambda m: 'code', line)
        for match in _LINK.finditer(plain):
            yield number, match.group(2)


def _external(target: str) -> bool:
    return bool(re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', target)) or target.startswith('//')


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)


def dead_links(path: Path) -> List[str]:
    problems = []
    cache: Dict[Path, Set[str]] = {}
    for number, target in links(path):
        if not target or _external(target):
            continue
        file_part, _, anchor = target.partition('#')
        where = f'{_shown(path)}:{number}: ({target})'
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f'{where} {file_part} does not exist')
            continue
        if anchor and dest.is_file() and dest.suffix.lower() == '.md':
            if dest not in cache:
                cache[dest] = anchors(dest)
            if anchor not in cache[dest]:
                problems.append(f'{where} no heading #{anchor} in {_shown(dest)}')
    return problems


# ------------------------------------------------------------------------------------------------- tests

def test_the_slug_rules_match_github_on_real_headings():
    assert slug('When INT8 misses its budget: the divergence report and `--int8-policy auto`') == \
        'when-int8-misses-its-budget-the-divergence-report-and---int8-policy-auto'
    assert slug('Precision census and TensorRT latency estimate') == 'precision-census-and-tensorrt-latency-estimate'
    assert slug('What is verified, what is not') == 'what-is-verified-what-is-not'
    assert slug('DeepStream (Gst-nvinfer)') == 'deepstream-gst-nvinfer'
    assert slug('Jetson: board facts, clocks, power') == 'jetson-board-facts-clocks-power'
    # and those headings are real ones, found as anchors of their files
    assert 'when-int8-misses-its-budget-the-divergence-report-and---int8-policy-auto' in \
        anchors(ROOT / 'docs' / 'auto-int8.md')
    assert 'precision-census-and-tensorrt-latency-estimate' in anchors(ROOT / 'docs' / 'quantization.md')


def test_duplicate_headings_get_numbered_and_code_is_not_a_link(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# Usage\n\n## Usage\n\n```\n# Not a heading\n[x](missing.md)\n```\n'
                    'See `[y](missing.md)`, [the second](#usage-1) and [the first](#usage).\n'
                    '[dead](#not-a-heading) [gone](nowhere.md) [web](https://example.com/x#y)\n')
    assert anchors(page) == {'usage', 'usage-1'}
    assert [t for _, t in links(page)] == ['#usage-1', '#usage', '#not-a-heading', 'nowhere.md',
                                           'https://example.com/x#y']
    problems = dead_links(page)
    assert len(problems) == 2 and 'no heading #not-a-heading' in problems[0] and 'nowhere.md does not exist' in \
        problems[1], problems


@pytest.mark.parametrize('path', doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path):
    problems = dead_links(path)
    assert not problems, 'dead links:\n' + '\n'.join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    readme = {t.partition('#')[0] for _, t in links(ROOT / 'README.md')}
    missing = [p.name for p in sorted((ROOT / 'docs').glob('*.md')) if f'docs/{p.name}' not in readme]
    assert not missing, f'docs pages the README does not link: {missing}'


def test_the_readme_is_a_front_door():
    lines = (ROOT / 'README.md').read_text(encoding='utf-8').count('\n')
    assert lines <= README_MAX_LINES, f'README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/'


# ------------------------------------------------------------------------------ module names in the docs
# Written against the issue-22 layout (scalablevit/core, data, models, device, host, benchmarks, serve, cli). It
# fails while the move of the code is unfinished, and afterwards whenever the docs name a module that is gone.

_PATH = re.compile(r'(?<![\w/.~$-])scalablevit/((?:[\w.-]+/)*[\w.-]*)')
_DOTTED = re.compile(r'(?<![\w/.-])scalablevit((?:\.[A-Za-z_]\w*)+)')
# dotted names in the docs that are not modules: ONNX metadata keys the pipeline stamps, the official repository's file
NOT_MODULES = {'scalablevit.py', 'scalablevit.normalize_in_model', 'scalablevit.quantization.exclude_nodes_auto'}


def module_names(files: List[Path]) -> Tuple[Set[str], Set[str]]:
    paths, dotted = set(), set()
    for path in files:
        text = path.read_text(encoding='utf-8')
        for match in _PATH.finditer(text):
            rest = match.group(1).rstrip('.')
            if rest:
                paths.add('scalablevit/' + rest)
        for match in _DOTTED.finditer(text):
            name = 'scalablevit' + match.group(1)
            if name not in NOT_MODULES:
                dotted.add(name)
    return paths, dotted


def _defined(tree: ast.AST) -> Dict[str, ast.AST]:
    names: Dict[str, ast.AST] = {}
    for node in getattr(tree, 'body', []):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split('.')[0]] = node
    return names


def resolve(dotted: str) -> Optional[str]:
    """None when ``scalablevit.a.b.c`` names a module, or a name defined in one (a class member included);
    else what is missing."""
    parts = dotted.split('.')[1:]
    where = PACKAGE
    for i, part in enumerate(parts):
        if (where / part / '__init__.py').is_file():
            where = where / part
            continue
        module = where / f'{part}.py'
        if module.is_file():
            where, rest = module, parts[i + 1:]
            break
        module, rest = where / '__init__.py', parts[i:]
        break
    else:
        return None
    if not rest:
        return None
    tree: ast.AST = ast.parse(module.read_text(encoding='utf-8'))
    for name in rest[:2]:
        names = _defined(tree)
        if name not in names:
            return f'{name} is not defined in {module.relative_to(ROOT)}'
        tree = names[name]
        if not isinstance(tree, ast.ClassDef):
            break
    return None


def test_the_module_check_itself():
    assert resolve('scalablevit.cli') is None
    assert resolve('scalablevit.no_such_module') is not None
    assert module_names([ROOT / 'docs' / 'layout.md'])[1] >= {'scalablevit.cli'}


def test_every_module_path_the_docs_name_exists_in_the_package():
    files = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md')), ROOT / 'bench' / 'README.md',
             ROOT / 'calib' / 'README.md']
    paths, dotted = module_names([f for f in files if f.is_file()])
    assert paths and dotted
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    missing += sorted(f'{d}: {why}' for d in dotted for why in [resolve(d)] if why)
    assert not missing, 'named in the docs, not in the package:\n' + '\n'.join(missing)
