"""The learning-rate schedule of Section 5.3."""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def noam_factor(step: int, warmup_steps: int) -> float:
    """min(step^-0.5, step * warmup_steps^-1.5): "increasing the learning rate linearly for the first warmup_steps
    training steps, and decreasing it thereafter proportionally to the inverse square root of the step number"."""
    return min(step**-0.5, step * warmup_steps**-1.5)


def base_lr(d_model: int, scale: float = 1.0) -> float:
    """scale * d_model^-0.5: the optimizer's learning rate, which noam_scheduler multiplies by noam_factor."""
    return scale * d_model**-0.5


def noam_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), for update number step >= 1."""
    return base_lr(d_model, scale) * noam_factor(step, warmup_steps)


def noam_scheduler(optimizer: Optimizer, warmup_steps: int) -> LambdaLR:
    """Scales the optimizer's learning rate (base_lr) by noam_factor, so that it follows noam_lr.

    LambdaLR counts from 0; the paper from 1.
    """
    return LambdaLR(optimizer, lambda step: noam_factor(step + 1, warmup_steps))
