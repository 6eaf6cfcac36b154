"""The learning-rate schedule of Section 5.3, and its variant for a run on a budget."""

from collections.abc import Callable

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


def budget_factor(step: int, warmup_steps: int, progress: float, final_fraction: float) -> float:
    """min(step * warmup_steps^-1.5, peak * (1 - (1 - final_fraction) * progress)), peak = warmup_steps^-0.5: Noam's
    warmup up to its peak, which then declines in a straight line to final_fraction of it as the run's progress goes
    from 0 to 1 (budgeted training, Li et al. 2020: a schedule that ends with the budget)."""
    peak = warmup_steps**-0.5
    return min(step * warmup_steps**-1.5, peak * (1 - (1 - final_fraction) * min(progress, 1.0)))


def budget_scheduler(optimizer: Optimizer, warmup_steps: int, progress: Callable[[int], float],
                     final_fraction: float) -> LambdaLR:
    """Scales base_lr by budget_factor; progress(step) says how much of the run's budget is spent at update step."""
    return LambdaLR(optimizer, lambda step: budget_factor(step + 1, warmup_steps, progress(step + 1), final_fraction))
