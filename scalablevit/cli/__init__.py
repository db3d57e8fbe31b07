"""The command-line tools and their one entry point.

Each tool is a module here with ``main(argv)`` (returns an exit code) and ``run()`` (the console entry point in
pyproject.toml); the scripts under deploy/, calib/ and bench/ call the same ``run``.

``run_cli(main)`` sets up logging, runs ``main(argv)`` and turns the project's errors into one line on
stderr: ``error: <message>`` with exit code 1 (bad command-line arguments included, through
``ArgumentParser``); Ctrl-C exits with 130 (128 + SIGINT) and SIGTERM with 143 (128 + SIGTERM), each after
the ``finally`` blocks and context managers on the way out have removed temporary files and released locks,
with one line and no traceback. Any other exception is a bug and keeps its traceback.

The flags several tools share are checked here, once: ``check_input_size`` (--input-size against the model),
``thread_count`` (--threads) and ``onnx_provider`` (--providers) are what every tool with those flags uses.
"""
import argparse
import importlib.util
import logging
import os
import signal
import sys
from typing import Callable, List, NoReturn, Optional, Sequence

from scalablevit.core.errors import InputSizeError, ScalableViTError

Main = Callable[[Optional[Sequence[str]]], Optional[int]]

LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'


def setup_logging(verbose: bool = False) -> None:
    """INFO to stderr (DEBUG with ``verbose`` or SCALABLEVIT_DEBUG=1); stdout stays for results."""
    debug = verbose or os.environ.get('SCALABLEVIT_DEBUG') == '1'
    logging.basicConfig(format=LOG_FORMAT, datefmt='%H:%M:%S')
    logging.getLogger().setLevel(logging.DEBUG if debug else logging.INFO)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error style (one ``error:`` line, exit 1) and a ``-v/--verbose`` flag."""

    def __init__(self, description: Optional[str] = None, **kwargs: object):
        kwargs.setdefault('formatter_class', argparse.RawDescriptionHelpFormatter)
        super().__init__(description=description, **kwargs)
        self.add_argument('-v', '--verbose', action='store_true', help='debug logging')

    def error(self, message: str) -> NoReturn:
        raise ScalableViTError(f'{message} (see {self.prog} --help)')

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace: Optional[argparse.Namespace] = None
                   ) -> argparse.Namespace:
        parsed = super().parse_args(args, namespace)
        if parsed.verbose:
            setup_logging(verbose=True)
        return parsed


# ------------------------------------------------------------------------------------------- shared flags
MAX_THREADS_PER_CPU = 4  # --threads beyond this many per CPU only oversubscribes (each thread costs a stack)


def int_in(lo: int, hi: int, why: str = '') -> Callable[[str], int]:
    """argparse ``type``: an integer from ``lo`` to ``hi`` (``why`` says where the bound comes from)."""
    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f'must be an integer from {lo} to {hi}{why}, got {text}')
        return value
    return integer


def thread_count(text: str) -> int:
    """argparse ``type`` of ``--threads``: 1 to MAX_THREADS_PER_CPU x the CPUs of this machine."""
    cpus = os.cpu_count() or 1
    return int_in(1, MAX_THREADS_PER_CPU * cpus, f' ({MAX_THREADS_PER_CPU} x the {cpus} CPUs here)')(text)


def available_providers() -> List[str]:
    """The execution providers of the onnxruntime installed here (none without onnxruntime)."""
    if importlib.util.find_spec('onnxruntime') is None:
        return []
    import onnxruntime
    return list(onnxruntime.get_available_providers())


def onnx_provider(text: str) -> str:
    """argparse ``type`` of ``--providers``: a provider this onnxruntime has (onnxruntime itself would only warn
    and fall back to another)."""
    available = available_providers()
    if text not in available:
        have = ', '.join(available) if available else 'none: onnxruntime is not installed'
        raise argparse.ArgumentTypeError(f"onnxruntime here has no provider '{text}' (available: {have})")
    return text


def check_input_size(size: Optional[int], model: Optional[str] = None) -> None:
    """The one check of every tool's ``--input-size`` (None: the tool's default): the side must tile ``model``
    (``check_model_input_size``: a multiple of its window grid, up to MAX_INPUT_SIDE); without a model, or without
    torch to build one (a board), a side from 1 to MAX_INPUT_SIDE."""
    if size is None:
        return
    if model is not None and importlib.util.find_spec('torch') is not None:
        from scalablevit.models.scalablevit import check_model_input_size
        check_model_input_size(model, size)
        return
    from scalablevit.core.manifest import MAX_INPUT_SIDE
    if not 1 <= size <= MAX_INPUT_SIDE:
        raise InputSizeError(f'--input-size {size} is not a side from 1 to {MAX_INPUT_SIDE} pixels')


def one_line(message: object) -> str:
    """Collapse a message onto one line (errors from libraries sometimes carry newlines)."""
    return ' '.join(str(message).split())


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that cleanup runs on the way out.

    A BaseException, so no ``except Exception`` in a library swallows it.
    """


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def run_cli(main: Main, argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run ``main(argv)`` and exit: its return code (None -> 0), 1 on ScalableViTError, 130 on Ctrl-C,
    143 on SIGTERM. A signal that arrives inside a long native call (onnxruntime, modelopt) is acted on when
    that call returns to Python."""
    setup_logging()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = main(argv) or 0
    except ScalableViTError as e:
        print(f'error: {one_line(e)}', file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print('error: interrupted', file=sys.stderr)
        code = 130
    except Terminated:
        print('error: terminated (SIGTERM)', file=sys.stderr)
        code = 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)
