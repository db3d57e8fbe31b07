"""The project's exception types: every user-facing failure is a ScalableViTError with a one-line message."""
import difflib
from typing import Iterable


class ScalableViTError(Exception):
    """A failure whose message names the file, tensor or value at fault; CLIs print it on one line."""


class InputSizeError(ScalableViTError, ValueError):
    """An image size the model cannot tile."""


class CheckpointError(ScalableViTError):
    """A weights file that is missing, corrupt, unsafe or of another variant."""


def unknown_choice(what: str, value: str, choices: Iterable[str]) -> ScalableViTError:
    """Error for a value outside a fixed set, suggesting the closest valid name."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(str(value).lower(), choices, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ''
    return ScalableViTError(f"unknown {what} '{value}' (choose from: {', '.join(choices)}){hint}")
