"""Argument types that refuse out-of-range numbers as argparse refuses a word where a number belongs: at parsing,
naming the option, before a model is loaded."""

import argparse

import torch

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


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


def device_argument(text: str) -> str:
    """auto, or a device that torch has here: cpu, cuda, cuda:N, mps or xpu."""
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except RuntimeError:  # torch's message lists twenty device types, most of which it was not built for
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda, cuda:N, mps, xpu or auto")
    if device.type == "cpu":
        return "cpu"
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type)
    if not backend.is_available():
        raise argparse.ArgumentTypeError(f"{text}: torch {torch.__version__} sees no {device.type} device here")
    count = getattr(torch, device.type).device_count()
    if device.index is not None and device.index >= count:
        raise argparse.ArgumentTypeError(f"{text}: torch sees {count} {device.type} device(s) here, numbered from 0")
    return str(device)


def int_argument(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
