"""Argument types shared by the command modules (argparse only: main.py's --help stays instant)."""

from __future__ import annotations

import argparse


def _integer(text: str, minimum: int, refusal: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} {refusal}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1, with a one-line message otherwise."""
    return _integer(text, 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer ≥ 0, with a one-line message otherwise."""
    return _integer(text, 0, "must not be negative")


def non_negative_float(text: str) -> float:
    """An argparse type: a number ≥ 0, with a one-line message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value
