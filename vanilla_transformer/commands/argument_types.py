"""Argument types that refuse out-of-range numbers as argparse refuses a word where a number belongs: at parsing,
naming the option, before a model is loaded."""

import argparse


def positive_int(text: str) -> int:
    """An integer of at least 1 (a batch size, a beam count, a number of threads)."""
    value = int_argument(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (an index: a layer, a head)."""
    value = int_argument(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_even_int(text: str) -> int:
    """A positive even integer (a d_model, whose dimensions pair up as sines and cosines)."""
    value = positive_int(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"must be even, not {value}")
    return value


def int_argument(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
