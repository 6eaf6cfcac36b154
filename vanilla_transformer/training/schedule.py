"""The learning-rate schedule of Section 5.3."""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def noam_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), for update number step >= 1."""
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def noam_scheduler(optimizer: Optimizer, warmup_steps: int) -> LambdaLR:
    """Scales the optimizer's learning rate (which should be scale * d_model^-0.5) by the schedule's shape.

    "increasing the learning rate linearly for the first warmup_steps training steps, and decreasing it thereafter
    proportionally to the inverse square root of the step number." LambdaLR counts from 0; the paper from 1.
    """
    return LambdaLR(optimizer, lambda step: min((step + 1) ** -0.5, (step + 1) * warmup_steps**-1.5))
