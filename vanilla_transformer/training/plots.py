"""Pictures of a training run."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(log_history: list[dict], path: Path, title: str = "") -> None:
    """Training loss and validation BLEU against the update step, side by side."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    bleu = [(e["step"], e["eval_bleu"]) for e in log_history if "eval_bleu" in e]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        left.plot(*zip(*train), color="tab:blue")
    left.set(xlabel="update", ylabel="training loss (label-smoothed)", title="loss")
    if bleu:
        right.plot(*zip(*bleu), marker="o", color="tab:green")
    right.set(xlabel="update", ylabel="sacreBLEU", title="validation BLEU")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
