"""The command-line tools and their one entry point.

Each tool is a module here with ``main(argv)`` (returns an exit code) and ``run()`` (the console entry point in
pyproject.toml); the scripts under deploy/, calib/ and bench/ call the same ``run``.

``run_cli(main)`` sets up logging, runs ``main(argv)`` and turns the project's errors into one line on
stderr: ``error: <message>`` with exit code 1 (bad command-line arguments included, through
``ArgumentParser``); Ctrl-C exits with 130 (128 + SIGINT) and SIGTERM with 143 (128 + SIGTERM), each after
the ``finally`` blocks and context managers on the way out have removed temporary files and released locks,
with one line and no traceback. Any other exception is a bug and keeps its traceback.
"""
import argparse
import logging
import os
import signal
import sys
from typing import Callable, NoReturn, Optional, Sequence

from scalablevit.core.errors import ScalableViTError

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
