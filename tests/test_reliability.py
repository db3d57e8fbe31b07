"""Hostile but realistic cases (issue 11), each through the command line: the exit code, the one ``error:`` line
and what the bundle directory holds afterwards. Every run uses the small ``scalable_vit_test`` config.

Bundles that look valid and are not (stale, foreign, modified), concurrent runs, odd image folders, full disks,
signals and bad inputs. Where a case needs a process boundary (signals, locks, disks) the CLI runs as a
subprocess; the calibration-size cap runs the same CLI in-process to shrink a constant.
"""
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

from scalablevit.core.bundle import Bundle
from scalablevit.core.errors import ScalableViTError
from scalablevit.data import sets
from scalablevit.data.sets import split_photos
from scalablevit.data.transforms import preprocess
from scalablevit.models.checkpoint import read_state_dict, save_weights
from scalablevit.models.scalablevit import create_model, data_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = ['--model', 'test', '--calib-size', '4', '--val-size', '4']
FP32 = SMALL + ['--precision', 'fp32']
SCRIPTS = ['deploy/build_engine.py', 'deploy/export_onnx.py', 'deploy/quantize.py', 'calib/make_calib.py',
           'bench/latency.py', 'bench/compare_bundle.py', 'bench/accuracy.py', 'bench/jetson_bench.py',
           'bench/int8_sweep.py', 'tools/train_fmnist.py']


# ------------------------------------------------------------------------------------------- helpers
def _env(extra: Dict[str, str] = None) -> Dict[str, str]:
    return {**os.environ, 'PYTHONPATH': str(ROOT), **(extra or {})}


def cli(script: str, *args, env: Dict[str, str] = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          env=_env(env), timeout=timeout)


def start(script: str, *args, env: Dict[str, str] = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(env))


def build(*args, **kwargs) -> subprocess.CompletedProcess:
    return cli('deploy/build_engine.py', *args, **kwargs)


def error_line(stderr: str) -> str:
    """The one ``error:`` line, which must also be the last line, with no traceback and no usage text."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith('error:')]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    assert 'Traceback' not in stderr and 'usage:' not in stderr, stderr[-3000:]
    return errors[0]


def failed(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout[-1000:], res.stderr[-3000:])
    return error_line(res.stderr)


def passed(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def snapshot(folder: Path) -> Dict[str, str]:
    """{relative path: sha256 or 'dir/'} of everything under ``folder`` except the lock file (a refused writer
    may create it, and it records the last holder's pid)."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): ('dir/' if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob('*')) if p.name != '.lock'}


def leftovers(folder: Path) -> List[str]:
    """Temporary files and work folders under ``folder``: none may survive a run, however it ended."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*')
                  if p.name.endswith('.tmp') or p.name == '.tmp' or 'scalablevit-quantize' in p.name)


def manifest(folder: Path) -> Dict:
    return json.loads((folder / 'manifest.json').read_text())


def report(folder: Path) -> Dict:
    return json.loads((folder / 'report.json').read_text())


def flip_byte(path: Path, offset: int = 1000) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope='module')
def fp32_bundle(tmp_path_factory):
    """One FP32 bundle made by the CLI into a path a shell must quote (spaces, quotes, a dollar sign)."""
    out = tmp_path_factory.mktemp('fp32') / "bundle with 'quotes' $HOME"
    res = passed(build(*FP32, '--out', out))
    return out, res


# ------------------------------------------------------------------------------ a bundle is one model
def test_another_precision_on_the_same_out_is_refused_and_force_starts_clean(fp32_bundle, tmp_path):
    """Reusing one --out for another precision merged the manifests (an old model.int8.onnx stayed listed and
    was benchmarked); now it is refused naming both, and --force removes the layout's files first."""
    out = copy_bundle(fp32_bundle[0], tmp_path / 'b')
    (out / 'engines').mkdir()
    (out / 'engines' / 'model.fp32.desktop.0123456789ab.engine').write_bytes(b'an engine of the old ONNX')
    (out / 'notes.txt').write_text('the user\'s own file')
    before = snapshot(out)
    line = failed(build(*SMALL, '--precision', 'fp16', '--out', out))
    assert line == (f'error: {out} is a bundle of scalable_vit_test fp32 at 224 px, this run makes '
                    'scalable_vit_test fp16 at 224 px: use another --out, or --force to start it clean')
    assert snapshot(out) == before
    res = passed(build(*SMALL, '--precision', 'fp16', '--out', out, '--force'))
    assert 'started clean (--force), removed manifest.json, model.fp32.onnx' in res.stderr
    m = manifest(out)
    assert m['precision'] == 'fp16' and sorted(m['onnx']) == ['fp16', 'fp32']
    assert not (out / 'engines').exists() and (out / 'notes.txt').read_text() == 'the user\'s own file'
    assert report(out)['precision'] == 'fp16' and not leftovers(out)


def test_identity_covers_model_and_input_size(tmp_path):
    out = tmp_path / 'b'
    out.mkdir()
    (out / 'manifest.json').write_text(json.dumps({'model': 'scalable_vit_small', 'precision': 'int8',
                                                   'input': {'name': 'input', 'shape': [None, 3, 448, 448]}}))
    with pytest.raises(ScalableViTError, match='is a bundle of scalable_vit_small int8 at 448 px, this run makes '
                                               'scalable_vit_test int8 at 224 px'):
        Bundle.create(out, {'model': 'scalable_vit_test', 'precision': 'int8', 'input_size': 224})
    with pytest.raises(ScalableViTError, match='at 448 px, this run makes scalable_vit_small int8 at 224 px'):
        Bundle.create(out, {'model': 'scalable_vit_small', 'precision': 'int8', 'input_size': 224})
    with Bundle.create(out, {'model': 'scalable_vit_small', 'precision': 'int8', 'input_size': 448}) as same:
        assert same.manifest['model'] == 'scalable_vit_small'


WRONG_SHAPES = {
    '[]': 'not a bundle manifest (a JSON object is expected, got an array)',
    '{"stages": 5}': "field 'stages' must be an object, got 5",
    '{"onnx": {"fp32": 3}}': "onnx entry 'fp32' is not a JSON object",
    '{"stages": {"export": {"key": 1, "outputs": {}}}}': "stage 'export': field 'key' must be a string, got 1",
    '{"schema": 7}': 'schema 7 is newer than this scalablevit reads (1): update the package',
    '{': 'not readable JSON',
}


def test_wrong_shaped_manifest_fails_a_host_run_with_one_line(tmp_path):
    """A valid but wrong-shaped manifest.json gave AttributeError/TypeError tracebacks."""
    runs = {}
    for i, text in enumerate(WRONG_SHAPES):
        out = tmp_path / f'b{i}'
        out.mkdir()
        (out / 'manifest.json').write_text(text)
        runs[text] = (out, start('deploy/build_engine.py', *FP32, '--out', out))
    for text, (out, proc) in runs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, (text, stderr[-2000:])
        line = error_line(stderr)
        assert line.startswith(f'error: {out / "manifest.json"}') and WRONG_SHAPES[text] in line, line
        assert line.endswith('(--force starts the bundle clean)'), line
        assert snapshot(out) == {'manifest.json': hashlib.sha256(text.encode()).hexdigest()}


# --------------------------------------------------------------------------- content keys for image data
def _bmp_folder(folder: Path, count: int) -> Path:
    """Uncompressed BMPs: same size, so a replacement can keep size and modification time."""
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f'{i}.bmp')
    return folder


def test_same_size_same_mtime_replacement_rebuilds_data(fp32_bundle, tmp_path):
    """The data stage was keyed by size and mtime: a replaced image with both kept reused stale sets."""
    out = copy_bundle(fp32_bundle[0], tmp_path / 'b')
    images = _bmp_folder(tmp_path / 'imgs', 6)
    args = ['--model', 'test', '--precision', 'fp32', '--calib', images, '--calib-size', '4', '--val-size', '2',
            '--out', out]
    passed(build(*args))
    first = manifest(out)
    assert report(out)['stages']['export']['reused'] and not report(out)['stages']['data']['reused']
    victim = images / str(np.load(out / 'calibration.npz')['names'][0])
    st = victim.stat()
    with open(victim, 'r+b') as f:  # in place: same inode, same size; a middle row (the centre crop sees it)
        f.seek(st.st_size // 2)
        f.write(bytes(range(48 * 3)))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = victim.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    passed(build(*args))
    second = manifest(out)
    assert not report(out)['stages']['data']['reused']
    assert second['stages']['data']['key'] != first['stages']['data']['key']
    assert second['calibration']['sha256'] != first['calibration']['sha256']
    passed(build(*args))  # unchanged now: reused, through the hash cache
    assert report(out)['stages']['data']['reused'] and (out / '.cache' / 'image-sha256.json').is_file()


# ------------------------------------------------------------------------- verify before anything else
def _break(out: Path, case: str) -> Path:
    if case == 'flipped deploy ONNX':
        flip_byte(out / 'model.fp32.onnx')
    elif case == 'flipped reference':
        flip_byte(out / 'reference.npz')
    elif case == 'flipped calibration':
        flip_byte(out / 'calibration.npz')
    elif case == 'missing reference':
        (out / 'reference.npz').unlink()
    elif case == 'nonexistent path':
        return out / 'nowhere'
    elif case == 'regular file':
        return out / 'report.md'
    elif case == 'invalid JSON':
        (out / 'manifest.json').write_text('{"model": ')
    elif case == 'JSON array':
        (out / 'manifest.json').write_text('[]')
    elif case == 'stages 5':
        (out / 'manifest.json').write_text('{"stages": 5}')
    elif case == 'missing field':
        m = manifest(out)
        del m['reference']
        (out / 'manifest.json').write_text(json.dumps(m))
    elif case == 'path outside':
        m = manifest(out)
        m['reference']['file'] = '../reference.npz'
        (out / 'manifest.json').write_text(json.dumps(m))
    return out


BROKEN = {
    'flipped deploy ONNX': 'ONNX {out}/model.fp32.onnx does not match the bundle manifest (sha256',
    'flipped reference': 'reference {out}/reference.npz does not match the bundle manifest',
    'flipped calibration': 'calibration {out}/calibration.npz does not match the bundle manifest',
    'missing reference': '{out}/reference.npz: reference file not found (listed in manifest.json)',
    'nonexistent path': '{out}/nowhere: bundle directory not found',
    'regular file': '{out}/report.md: not a bundle directory (a regular file)',
    'invalid JSON': '{out}/manifest.json: not readable JSON',
    'JSON array': 'not a bundle manifest (a JSON object is expected, got an array)',
    'stages 5': "field 'stages' must be an object, got 5",
    'missing field': "{out}/manifest.json is missing 'reference'",
    'path outside': "file '../reference.npz' must be a plain name inside the bundle",
}


def test_device_mode_verifies_the_bundle_before_looking_for_tensorrt(fp32_bundle, tmp_path):
    """Without TensorRT, --bundle said "the host bundle is complete" and exited 0 for all of these."""
    runs = {}
    for i, case in enumerate(BROKEN):
        out = copy_bundle(fp32_bundle[0], tmp_path / f'b{i}')
        target = _break(out, case)
        runs[case] = (out, snapshot(out), start('deploy/build_engine.py', '--bundle', target))
    for case, (out, before, proc) in runs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, (case, stderr[-2000:])
        line = error_line(stderr)
        assert BROKEN[case].format(out=out) in line, (case, line)
        assert 'TensorRT stage skipped' not in stdout and snapshot(out) == before, case


@pytest.mark.parametrize('script, args', [('bench/latency.py', ['--bundle']), ('bench/compare_bundle.py', []),
                                          ('bench/jetson_bench.py', ['--bundle'])])
def test_benchmarks_verify_the_bundle_first(fp32_bundle, tmp_path, script, args):
    """bench/latency.py --bundle benchmarked a foreign model.int8.onnx; every benchmark now checks first."""
    out = copy_bundle(fp32_bundle[0], tmp_path / 'b')
    flip_byte(out / 'model.fp32.onnx')
    before = snapshot(out)
    line = failed(cli(script, *args, out))
    assert f'ONNX {out}/model.fp32.onnx does not match the bundle manifest' in line
    assert snapshot(out) == before


def test_device_command_is_shell_quoted_and_runs(fp32_bundle):
    """The printed command for the target survives a path with spaces, quotes and a dollar sign."""
    out, res = fp32_bundle
    (skip,) = [line for line in res.stdout.splitlines() if line.startswith('TensorRT stage skipped')]
    command = skip.split('on the target run: ', 1)[1]
    words = shlex.split(command)
    assert words[:3] == ['python', 'deploy/build_engine.py', '--bundle'] and words[3] == str(out)
    shell = subprocess.run(['bash', '-c', command], capture_output=True, text=True, cwd=ROOT, timeout=300,
                           env=_env({'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}'}))
    assert shell.returncode == 0, shell.stderr[-2000:]
    assert shell.stdout.startswith('TensorRT stage skipped') and f'--bundle {shlex.quote(str(out))}' in shell.stdout


# ------------------------------------------------------------------------------------ one writer a time
def test_a_held_lock_refuses_a_second_writer_with_its_pid(tmp_path):
    out = tmp_path / 'b'
    holder = subprocess.Popen([sys.executable, '-c', 'import sys\nfrom scalablevit.core.bundle import Bundle\n'
                               'b = Bundle.create(sys.argv[1])\nprint("locked", flush=True)\nsys.stdin.read()',
                               str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == 'locked'
        line = failed(build(*FP32, '--out', out))
        assert line == (f'error: another run holds {out} (pid {holder.pid}): wait for it to finish, '
                        'or use another --out')
        assert os.listdir(out) == ['.lock']
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with Bundle.create(out) as bundle:  # the kernel released the lock with the holder's exit
        assert bundle.path == out


def test_two_runs_started_together_never_mix(tmp_path):
    """Both used one .write-probe (a false "not writable"), or both exited 0 with a manifest describing 256
    calibration images beside a calibration.npz of 16. Now one waits its turn or is refused."""
    out = tmp_path / 'b'
    runs = [start('deploy/build_engine.py', '--model', 'test', '--precision', 'fp32', '--calib-size', n,
                  '--val-size', '2', '--out', out) for n in (4, 6)]
    results = [(proc.wait(timeout=600), proc.stderr.read()) for proc in runs]
    assert 0 in [code for code, _ in results], results
    for code, stderr in results:
        assert 'not writable' not in stderr
        if code:
            assert code == 1 and 'error: another run holds' in error_line(stderr)
    m = manifest(out)
    assert m['calibration']['count'] == len(np.load(out / 'calibration.npz')['images'])
    assert m['reference']['samples'] == len(np.load(out / 'reference.npz')['input']) == 2
    assert not leftovers(out)


# --------------------------------------------------------------------------------------- odd folders
@pytest.fixture(scope='module')
def hostile_folder(tmp_path_factory):
    """8 distinct images behind two link loops, a link to itself as a folder, and a dangling link."""
    folder = tmp_path_factory.mktemp('hostile') / 'imgs'
    (folder / 'sub').mkdir(parents=True)
    (folder / 'sub2').mkdir()
    rng = np.random.default_rng(3)
    for name in [f'a{i}.png' for i in range(6)] + ['sub/b0.png']:
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / name)
    Image.new('L', (20000, 1), 200).save(folder / 'wide.png')  # ~100 bytes; a 5,120,000 x 256 resize
    (folder / 'self').symlink_to('.')
    (folder / 'sub' / 'loop').symlink_to('..')
    (folder / 'sub2' / 'loop2').symlink_to('../sub')
    (folder / 'dangling.png').symlink_to('missing.png')
    return folder


@pytest.fixture(scope='module')
def hostile_run(fp32_bundle, hostile_folder, tmp_path_factory):
    out = copy_bundle(fp32_bundle[0], tmp_path_factory.mktemp('hostile-out') / 'b')
    res = build('--model', 'test', '--precision', 'fp32', '--calib', hostile_folder, '--calib-size', '6',
                '--val-size', '2', '--out', out, timeout=300)  # the loops made os.walk run forever
    return out, passed(res)


def test_link_loops_and_self_links_add_no_image_twice(hostile_run):
    """One self -> . link counted 6 images as 246 and put 7 of 8 validation images into calibration too."""
    out, _ = hostile_run
    calib, ref = np.load(out / 'calibration.npz'), np.load(out / 'reference.npz')
    names = [str(n) for n in calib['names']]
    assert len(names) == len(set(names)) == 6 and len(ref['input']) == 2
    assert not [n for n in names if 'self' in n or 'loop' in n], names
    m = manifest(out)
    assert m['calibration']['count'] == 6 and m['reference']['samples'] == 2
    flat_calib, flat_ref = calib['images'].reshape(6, -1), ref['input'].reshape(2, -1)
    assert min(np.abs(c - r).max() for c in flat_calib for r in flat_ref) > 0.1  # no image on both sides


def test_dangling_link_is_skipped_and_counted(hostile_run, hostile_folder):
    _, res = hostile_run
    assert f'{hostile_folder}: skipped 1 dangling symbolic link(s) (e.g. {hostile_folder}/dangling.png)' in res.stderr


def test_a_20000_by_1_png_never_allocates_gigapixels(hostile_run):
    """It was resized to 5,120,000 x 256 (8.6 GB RSS). The whole run's peak now stays below what that one resize
    alone allocates (RGB, 8 bits): a bound from the failure, not from one machine's baseline (about 2 GB)."""
    out, _ = hostile_run
    assert report(out)['host']['peak_rss_mb'] < 5_120_000 * 256 * 3 / 2 ** 20  # 3,750 MiB


def test_sixteen_bit_images_are_scaled_and_oversized_ones_skipped(hostile_run, hostile_folder, tmp_path):
    out = copy_bundle(hostile_run[0], tmp_path / 'b')
    val = tmp_path / 'val16'
    val.mkdir()
    ramp = (np.arange(224 * 224, dtype=np.uint32).reshape(224, 224) * 65535 // (224 * 224 - 1)).astype(np.uint16)
    Image.fromarray(ramp).save(val / 'g16.png')
    Image.new('L', (10000, 9000)).save(val / 'huge.png')  # 90 MP in 87 KB
    res = passed(build('--model', 'test', '--precision', 'fp32', '--calib', hostile_folder, '--calib-size', '4',
                       '--val', val, '--val-size', '3', '--out', out))
    assert f'{val}/huge.png: 10000 x 9000 = 90,000,000 pixels, beyond the 89,478,485-pixel cap' in res.stderr
    ref = np.load(out / 'reference.npz')['input']
    assert ref.shape == (1, 3, 224, 224)
    eight_bit = Image.fromarray(((ramp.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)).convert('RGB')
    cfg = data_config('scalable_vit_test')
    np.testing.assert_allclose(ref[0], preprocess(eight_bit, cfg), atol=1e-6)
    white = (1 - np.asarray(cfg['mean'])) / np.asarray(cfg['std'])
    assert (np.isclose(ref[0], white[:, None, None], atol=1e-5)).mean() < 0.05  # clipping made 89 % white


def test_calib_size_beyond_the_bundled_photos_is_capped(fp32_bundle, tmp_path, monkeypatch, capsys, caplog):
    """--calib-size 1000000000 with the bundled photos built crops until the kernel killed the process."""
    from scalablevit.cli import build_engine, run_cli
    monkeypatch.setattr(sets, 'CROPS_PER_PHOTO', 2)  # the real 128 per photo would take a minute here
    out = copy_bundle(fp32_bundle[0], tmp_path / 'b')
    with pytest.raises(SystemExit) as done:
        run_cli(build_engine.main, ['--model', 'test', '--precision', 'fp32', '--calib-size', '1000000000',
                                    '--val-size', '2', '--out', str(out)])
    assert done.value.code == 0, capsys.readouterr().err
    calib_photos = split_photos(0)[0]
    expected = 2 * len(calib_photos)
    assert (f'1000000000 images asked for, capped to {expected}: the {len(calib_photos)} bundled photos give at '
            'most 2 crops each') in caplog.text
    assert caplog.text.count('images asked for, capped') == 1
    assert manifest(out)['calibration']['count'] == expected and not leftovers(out)


# --------------------------------------------------------------------------------- disks and signals
@pytest.fixture
def tiny_disk(tmp_path):
    """A real small file system (tmpfs) of a given size; needs root (CAP_SYS_ADMIN), else skipped."""
    mounts = []

    def make(size: int) -> Path:
        point = tmp_path / f'disk{len(mounts)}'
        point.mkdir()
        res = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(point)],
                             capture_output=True, text=True)
        if res.returncode:
            pytest.skip(f'cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}')
        mounts.append(point)
        return point
    yield make
    for point in mounts:
        subprocess.run(['umount', str(point)], check=False)


def test_full_disk_during_export_names_the_file_and_free_space(tiny_disk):
    out = tiny_disk(512 * 1024) / 'b'
    line = failed(build(*FP32, '--out', out))
    assert line.startswith(f'error: cannot write {out}/model.fp32.onnx: No space left on device (')
    assert line.endswith(' free there)')
    assert not out.exists()  # the run made --out and wrote nothing: it removes it


def test_full_disk_during_data_keeps_the_finished_export(fp32_bundle, tiny_disk):
    src = fp32_bundle[0]
    out = tiny_disk((src / 'model.fp32.onnx').stat().st_size + 256 * 1024) / 'b'
    out.mkdir()
    for name in ('model.fp32.onnx', 'manifest.json'):
        shutil.copy(src / name, out / name)
    line = failed(build(*FP32, '--out', out))
    assert line.startswith(f'error: cannot write {out}/calibration.npz: No space left on device (')
    assert not leftovers(out) and sorted(os.listdir(out)) == ['.lock', 'manifest.json', 'model.fp32.onnx']


def test_full_disk_during_quantize_is_one_line(fp32_bundle, tiny_disk):
    src = fp32_bundle[0]
    room = sum((src / f).stat().st_size for f in ('model.fp32.onnx', 'calibration.npz', 'reference.npz'))
    out = tiny_disk(room + 512 * 1024) / 'b'
    line = failed(build(*SMALL, '--precision', 'int8', '--out', out))
    # modelopt's own writes carry no file name: the line names the stage's work folder
    assert line.startswith(f"error: cannot write the quantize stage's temporary files in {out}/.tmp/run-"), line
    assert ': No space left on device (' in line and line.endswith(' free there)'), line
    assert not leftovers(out) and not (out / 'model.int8.onnx').exists()
    assert set(manifest(out)['stages']) == {'export', 'data'}  # a rerun with room resumes at quantize


def test_stale_temporary_files_of_dead_runs_are_swept(fp32_bundle, tmp_path):
    out = copy_bundle(fp32_bundle[0], tmp_path / 'b')
    (out / '.model.fp32.onnx.k3j4h5_a.tmp').write_bytes(b'half an ONNX')
    (out / 'engines').mkdir()
    (out / 'engines' / '.model.fp32.desktop.engine.x8y9.tmp').write_bytes(b'half an engine')
    work = out / '.tmp' / 'run-999999' / 'scalablevit-quantize-abc'
    work.mkdir(parents=True)
    (work / 'model.fp32.onnx').write_bytes(b'modelopt work')
    res = passed(build(*FP32, '--out', out))
    assert 'removed 2 temporary file(s) and 1 work folder(s) left by an earlier run' in res.stderr
    assert not leftovers(out) and os.listdir(out / 'engines') == []
    assert all(report(out)['stages'][s]['reused'] for s in ('export', 'data'))


def test_sigterm_cleans_up_and_exits_143(tmp_path):
    """SIGTERM exited silently, leaving .tmp files in the bundle and modelopt's files in the system temp dir."""
    out, system_tmp = tmp_path / 'b', tmp_path / 'system-tmp'
    system_tmp.mkdir()
    proc = start('deploy/build_engine.py', '--model', 'test', '--precision', 'int8', '--calib-size', '32',
                 '--val-size', '2', '--out', out, env={'TMPDIR': str(system_tmp)})
    deadline = time.monotonic() + 300
    while not list(out.glob('.tmp/run-*/scalablevit-quantize-*')):  # modelopt is at work
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    assert error_line(stderr) == 'error: terminated (SIGTERM)'
    assert not leftovers(out) and not (out / 'model.int8.onnx').exists()
    # modelopt's and onnxruntime's temporary files were inside the bundle; '.ses' is the session file that
    # onnxruntime's telemetry writes to $TMPDIR on import (one fixed name, reused by every process)
    assert [f for f in os.listdir(system_tmp) if f != '.ses'] == []
    assert set(manifest(out)['stages']) == {'export', 'data'}


# ---------------------------------------------------------------------------------------------- inputs
def test_nan_and_inf_weights_are_refused_at_load_naming_the_first_tensor(tmp_path):
    """They went through export and data and died inside modelopt ("Too many bins")."""
    model = create_model('scalable_vit_test')
    state = model.state_dict()
    keys = [k for k, t in state.items() if t.is_floating_point()]
    state[keys[-1]].view(-1)[0] = float('nan')
    state[keys[len(keys) // 2]].view(-1)[-1] = float('inf')
    weights = tmp_path / 'broken.safetensors'
    save_weights(model, weights)
    first = next(k for k, t in read_state_dict(weights).items() if not torch.isfinite(t).all())  # in file order
    out = tmp_path / 'b'
    line = failed(build(*FP32, '--weights', weights, '--out', out))
    assert line == (f"error: {weights}: tensor '{first}' holds 1 NaN/Inf value(s) of "
                    f"{state[first].numel()}; refusing weights that cannot give finite outputs")
    assert not out.exists()


def test_every_cli_reports_argument_errors_in_one_line_exit_1():
    """tools/train_fmnist.py printed usage and exited 2; every script now goes through the project's parser."""
    runs = {script: start(script, '--no-such-flag') for script in SCRIPTS}
    runs['bad int'] = start('deploy/build_engine.py', '--calib-size', 'abc')
    lines = {}
    for name, proc in runs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, (name, proc.returncode, stderr[-2000:])
        lines[name] = error_line(stderr)
        assert len(stderr.strip().splitlines()) == 1 and lines[name].endswith('--help)'), (name, stderr)
    assert lines['tools/train_fmnist.py'] == ('error: unrecognized arguments: --no-such-flag '
                                              '(see train_fmnist.py --help)')
    assert lines['bad int'].startswith("error: argument --calib-size: invalid int value: 'abc'")


def test_accuracy_bench_without_weights_is_marked_untrained(fp32_bundle, tmp_path):
    """bench/accuracy.py compared against random weights without a word and wrote no untrained mark."""
    folder = tmp_path / 'val'
    rng = np.random.default_rng(5)
    for i in range(6):
        (folder / f'{i % 3:02d}').mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f'{i % 3:02d}' / f'{i}.png')
    out = tmp_path / 'acc'
    res = passed(cli('bench/accuracy.py', '--val', folder, '--model', 'test', '--out', out,
                     '--candidate', fp32_bundle[0] / 'model.fp32.onnx'))
    assert 'the PyTorch reference uses RANDOM weights (seed 0' in res.stderr
    (entry,) = json.loads((out / 'accuracy.json').read_text())
    assert entry['warning'] == 'untrained weights' and entry['reference_weights'] == 'untrained-seed0'
    # seeded like the pipeline's untrained bundle: the reference is exactly the model that was exported
    assert entry['accuracy']['top1_agreement'] == 1.0 and entry['accuracy']['max_abs_diff'] < 1e-4
    assert 'UNTRAINED' in (out / 'accuracy.md').read_text()
