"""Speed kernels of the model, mostly for CPU: they change no result, only how fast it is computed (benchmarks/
measure each).

- LabelSmoothedCrossEntropy: the loss and its gradient in one pass per chunk of rows, in fp32 whatever the logits';
  chunks sized for the CPU's cache there, for few kernel launches on an accelerator.
- InvertedDropout: dropout whose mask costs a quarter of the random draws.
- attention_function: the attention kernel of each call; by default per shape and CPU class (prefers_eager: plain
  matmuls or SDPA), from measurements.

Ships beside modeling.py as Hub remote code; imports only torch and transformers (through modeling_compat).
"""

import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .modeling_compat import attention_interface

# The model's default attn_implementation: SDPA, and on CPU plain matmuls where prefers_eager finds them faster. It is
# registered under a name of its own, so that any kernel asked for by name, "sdpa" included, is used at every shape.
SDPA_BY_SHAPE = "sdpa_by_shape"
AttentionInterface.register(SDPA_BY_SHAPE, ALL_ATTENTION_FUNCTIONS["sdpa"])


class LabelSmoothedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy against the smoothed target (1 - eps) * one-hot + eps / V; labels of -100 count nothing.

    It equals F.cross_entropy(logits.float(), labels, label_smoothing=eps, reduction="sum"). The gradient,
    softmax(logits) - target, is written in one pass per chunk of rows (row_chunks), in fp32 whatever the logits'
    dtype, so the log-probabilities are never held, nor an fp32 copy of bf16 logits beyond one chunk
    (benchmarks/bench_loss.py).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, epsilon: float,
                device_type: str | None = None) -> torch.Tensor:
        """The summed loss; `device_type` picks whose chunks to use (the logits' device by default)."""
        valid = labels != -100
        target = labels.masked_fill(~valid, 0)
        log_normalizer = logits.new_empty(len(logits), dtype=torch.float32)
        losses = torch.empty_like(log_normalizer)
        ctx.chunks = row_chunks(logits, device_type or logits.device.type)
        for rows in ctx.chunks:
            z = logits[rows].float()
            log_normalizer[rows] = z.logsumexp(-1)
            # -sum_k q_k log p_k = logsumexp(z) - (1 - eps) z_y - eps mean_k(z_k)
            z_target = z.gather(1, target[rows, None]).squeeze(1)
            losses[rows] = log_normalizer[rows] - (1 - epsilon) * z_target - epsilon * z.mean(-1)
        ctx.save_for_backward(logits, log_normalizer, target, valid)
        ctx.epsilon = epsilon
        return losses.masked_fill(~valid, 0).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        logits, log_normalizer, target, valid = ctx.saved_tensors
        epsilon, vocab = ctx.epsilon, logits.shape[-1]
        weight = (grad_loss * valid).float()[:, None]
        grad = torch.empty_like(logits)
        for rows in ctx.chunks:
            # Computed in place in an fp32 gradient; through an fp32 copy of the chunk for a bf16 one.
            out = grad[rows]
            g = out.copy_(logits[rows]) if out.dtype == torch.float32 else logits[rows].float()
            g.sub_(log_normalizer[rows, None]).exp_().sub_(epsilon / vocab)  # softmax - eps / V
            g.scatter_add_(1, target[rows, None], g.new_full((len(g), 1), epsilon - 1))  # - (1 - eps) at the label
            g.mul_(weight[rows])
            if g is not out:
                out.copy_(g)
        return grad, None, None, None


class InvertedDropout(torch.autograd.Function):
    """Inverted dropout whose mask costs a quarter of the random draws: each 64-bit draw gives four 16-bit numbers.

    An element is kept when its number is at least round(p * 65536) - 32768, so with probability 1 - p rounded to
    1/65536 (0.9 for p = 0.1 to within 6e-6), and scaled by 1 / (1 - p). bernoulli_, inside F.dropout, draws one
    number per element: on CPU that makes dropout about 2x slower forward + backward (benchmarks/bench_dropout.py).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        draws = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64, device=x.device)
        keep = draws.view(torch.int16)[: x.numel()].view(x.shape) >= round(p * 65536) - 32768
        ctx.save_for_backward(keep)
        ctx.scale = 1 / (1 - p)
        return torch.where(keep, x, 0).mul_(ctx.scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0).mul_(ctx.scale), None


def apply_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with InvertedDropout's cheaper mask when training on CPU (elsewhere torch's kernels are fused)."""
    if not training or p == 0:
        return x
    if x.is_cpu and p < 1 and not torch.compiler.is_compiling():
        return InvertedDropout.apply(x, p)
    return F.dropout(x, p, training)


def row_chunks(logits: torch.Tensor, device_type: str) -> list[slice]:
    """The slices of rows that LabelSmoothedCrossEntropy computes one at a time on a device of `device_type`.

    On CPU, 2^21 values (8 MB in fp32), which stay in its cache. An accelerator is bound by kernel launches (18
    operators per chunk), not by a cache: 2^28 values (1 GiB in fp32) per chunk, so that a micro-batch of 6,250
    tokens over a 37k vocabulary is one chunk, 29 operators, not 112 chunks and 2,027 (benchmarks/bench_loss.py).
    Under torch.compile, one chunk of all rows: a loop over the rows would guard on their number (a recompile per
    batch shape), and the compiler fuses the passes itself.
    """
    if torch.compiler.is_compiling():
        return [slice(None)]
    elements = 1 << 21 if device_type == "cpu" else 1 << 28
    step = max(1, elements // logits.shape[-1])
    return [slice(start, start + step) for start in range(0, len(logits), step)]


def attention_function(config, query: torch.Tensor, output_attentions: bool, eager):
    """The attention kernel for this call, a function of transformers' AttentionInterface signature.

    `eager` (the model's plain matmul-softmax-matmul, the only kernel that returns the weights) when the weights are
    asked for, or under the default SDPA_BY_SHAPE where prefers_eager finds it faster for this query; otherwise the
    kernel config._attn_implementation names ("sdpa", "eager", or one registered with AttentionInterface), at every
    shape. FlashAttention and flex attention are refused by the model class (VanillaTransformerPreTrainedModel).
    """
    name = config._attn_implementation
    if output_attentions or (name == SDPA_BY_SHAPE and prefers_eager(query)):
        return eager
    return attention_interface(name, eager)


def prefers_eager(query: torch.Tensor, capability: str | None = None) -> bool:
    """Whether plain matmul-softmax-matmul beats SDPA for this query on this CPU (benchmarks/bench_attention.py).

    `capability` is torch's name for the CPU's vector instructions (torch.backends.cpu.get_cpu_capability(), which
    ATEN_CPU_CAPABILITY overrides); the crossings were measured on an AVX-512 BF16 CPU and an AVX2-only one, and any
    other CPU, like any other device, keeps SDPA. docs/performance.md has the tables. Under torch.compile, SDPA at
    every shape: the crossings are eager ones, and each would be a guard on the batch shape (a recompile).
    """
    if not query.is_cpu or torch.compiler.is_compiling():
        return False
    capability = capability or cpu_capability()
    batch, _, query_length, _ = query.shape
    decoding = query_length == 1
    if capability.startswith("AVX512"):
        if query.dtype == torch.bfloat16:
            # SDPA's bf16 kernel is 4x slower in training and 1.3-7x slower decoding 8 to 256 sequences; only a
            # few sequences decoding one token at a time go faster through it, where its lower overhead counts.
            return batch * query_length > 4
        # fp32: SDPA wins on whole sequences (training, the encoder), but one new token per sequence, as in
        # decoding, goes 1.2-1.8x faster through plain matmuls from 16 sequences (or beams) on.
        return decoding and batch >= 16
    if capability == "AVX2":
        # SDPA wins everywhere in bf16 (emulated on such a CPU) and in training; fp32 decoding crosses between 16
        # and 64 sequences: plain is 1.2-1.3x faster from 64 on.
        return query.dtype == torch.float32 and decoding and batch >= 64
    return False


@functools.cache
def cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()
