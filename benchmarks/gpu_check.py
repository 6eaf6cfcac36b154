"""The GPU path in one run: environment, the loss kernel, attention kernels, fp32/bf16/fp16 training, speed and
memory, CPU vs CUDA decoding, loading and the pipeline on a GPU, torch.compile recompiles.

Prints one JSON object per line and check: its name, figures, the tolerance it is judged by and "pass". A check that
fails to run prints {"check": ..., "error": ...} and the others go on; once --budget-minutes is spent, the checks left
print {"check": ..., "skipped": ...}. Lines are flushed as they come, so a run cut short keeps what it measured.
Without CUDA it prints one line saying so and exits 0; --cpu-smoke runs every check at the tiny preset on the CPU
(the "CUDA" side is the CPU too, and what only CUDA can tell is listed under "needs_cuda"), to exercise the code.
The training data is synthetic (say the records): Zipf-distributed ids over the vocabulary in length-sorted token
batches, the target the source through a fixed permutation of the vocabulary (and 0.8-1.2 times as long), so that
the loss can fall.
Usage: python benchmarks/gpu_check.py [--budget-minutes 8] [--model FOLDER] [--only CHECK ...] [--cpu-smoke]
"""

import argparse
import contextlib
import json
import logging
import math
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA_NOTE = ("synthetic: Zipf(1.1) token ids over the vocabulary, length-sorted token batches (longest source ~ "
             "lognormal around 25), target = the source through a fixed permutation of the vocabulary, stretched or "
             "shrunk in order to 0.8-1.2 times its length")


@dataclass
class Sizes:
    """How big each check runs: the paper's shapes on a GPU, the tiny preset for --cpu-smoke."""

    preset: str  # training in three precisions, attention kernels
    vocab: int
    steps: int
    report_at: tuple
    warmup: int | None  # None: the recipe's
    speed_presets: tuple
    speed_steps: int
    gpu_batch_tokens: int
    copy_preset: str  # the model decoded on CPU and CUDA, loaded and run in the pipeline
    copy_vocab: int
    copy_steps: int
    compile_preset: str
    compile_shapes: int


GPU = Sizes("base", 37000, 200, (25, 50, 100, 200), None, ("base", "big"), 10, 25000, "small", 1000, 600, "small", 10)
SMOKE = Sizes("tiny", 500, 8, (2, 4, 8), 8, ("tiny",), 2, 512, "tiny", 300, 120, "tiny", 3)


def emit(record: dict) -> None:
    print(json.dumps(record, default=str), flush=True)


class Run:
    """What the checks share: the device, the sizes, the recipe's batch, the time left and the decoded model."""

    def __init__(self, args):
        self.smoke = args.cpu_smoke
        self.device = torch.device("cpu" if self.smoke else "cuda")
        self.sizes = SMOKE if self.smoke else GPU
        self.deadline = time.monotonic() + 60 * args.budget_minutes
        self.model_arg = args.model
        self.recipe = recipe_batch(Path(args.recipe))
        self.micro_batch_tokens = 256 if self.smoke else self.recipe["micro_batch_tokens"]
        self.warmup = self.sizes.warmup or self.recipe["warmup_steps"]
        self.workdir = tempfile.TemporaryDirectory(prefix="gpu-check-")
        self._decoded = None

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def batches(self, count: int, tokens: int, seed: int, shortest: float = 0.8, stretch: float = 0.2) -> list:
        """token_batches over the checks' vocabulary, on the device, within the tiny preset's positions if smoke."""
        return token_batches(count, tokens, self.sizes.vocab, seed, shortest, stretch, self.device,
                             40 if self.smoke else 120)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def decoded_model(self) -> dict:
        """The model that the decoding and loading checks use: --model, or one trained here on a copy task."""
        if self._decoded is None:
            self._decoded = given_model(self.model_arg) if self.model_arg else copy_model(self)
        return self._decoded


def recipe_batch(path: Path) -> dict:
    """The base recipe's micro-batch and warmup, read from its YAML (6250 and 4000 where it does not say)."""
    training = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("training") or {}
    micro = training.get("micro_batch_tokens") or training.get("update_tokens")
    return {"recipe": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
            "micro_batch_tokens": int(micro or 6250), "micro_batch_tokens_from": "recipe" if micro else "default",
            "warmup_steps": int(training.get("warmup_steps", 4000))}


# --- data ------------------------------------------------------------------------------------------------------------

def token_batches(count: int, tokens: int, vocab: int, seed: int = 0, shortest: float = 0.8, stretch: float = 0.2,
                  device="cpu", longest: int = 120) -> list:
    """`count` padded batches of <= `tokens` tokens, counted as fairseq does (pairs x longest side), always the same
    for a seed: DATA_NOTE. `shortest` is the shortest source as a fraction of the batch's longest, each target is
    1 +- `stretch` times as long as its source, and `longest` is the longest source of all."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.arange(1, vocab - 3, dtype=torch.float64) ** -1.1
    permutation = torch.randperm(vocab - 4, generator=generator) + 4
    batches = []
    for _ in range(count):
        length = int(torch.empty(1).log_normal_(math.log(25), 0.5, generator=generator).clamp(4, longest))
        pairs = max(1, tokens // (math.ceil((1 + stretch) * length) + 1))
        lengths = torch.randint(max(1, int(shortest * length)), length + 1, (pairs,), generator=generator)
        ids = torch.multinomial(weights, pairs * length, replacement=True, generator=generator).view(pairs, length) + 4
        # The target: the source's tokens stretched or shrunk, in order (so that source and target lengths differ, as
        # in real batches), each through the permutation.
        ratios = 1 - stretch + 2 * stretch * torch.rand(pairs, generator=generator)
        target_lengths = (lengths * ratios).round().long().clamp(min=1)
        aligned = torch.arange(int(target_lengths.max()))[None] * lengths[:, None] // target_lengths[:, None]
        targets = permutation[ids.gather(1, aligned.clamp(max=length - 1)) - 4]
        source = ended(ids, lengths, 0)
        batches.append({"input_ids": source.to(device), "attention_mask": (source != 0).long().to(device),
                        "labels": ended(targets, target_lengths, -100).to(device)})
    return batches


def ended(ids: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """Each row's first `length` ids, then </s>, then `pad`."""
    position = torch.arange(ids.shape[1] + 1)
    padded = torch.cat([ids, ids.new_zeros(len(ids), 1)], 1).masked_fill(position >= lengths[:, None], pad)
    return padded.masked_fill(position == lengths[:, None], 2)


def pseudo_sentences(count: int, seed: int) -> list[str]:
    """Sentences of 3-12 made-up words from 400: text for a tokenizer and a copy task."""
    rng = random.Random(seed)
    syllables = "ka lo mi ne ru sa te vi do pa ze gu bo fi".split()
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(400)})
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(count)]


# --- models and steps ------------------------------------------------------------------------------------------------

def new_model(preset: str, vocab: int, seed: int = 0, **overrides):
    from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    torch.manual_seed(seed)
    config = VanillaTransformerConfig.from_preset(preset, vocab_size=vocab, **overrides)
    return VanillaTransformerForConditionalGeneration(config)


def training_loss():
    """The trainer's label-smoothed loss (training.label_smoothing 0.1), as the recipe trains."""
    from vanilla_transformer.training.trainer import LabelSmoothedLoss

    return LabelSmoothedLoss(0.1)


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def forward_loss(model, batch, loss_fn, precision="fp32"):
    with autocast(next(model.parameters()).device, precision):
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        decoder_input_ids=model.prepare_decoder_input_ids_from_labels(batch["labels"]))
        return outputs, loss_fn(outputs, batch["labels"])


def adam(model, lr: float):
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)


def batch_tokens(batch) -> int:
    """Non-pad source + target tokens, as the trainer's tokens/s counts them."""
    return int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-30))


def needs_cuda(run: Run, what: str) -> dict:
    return {"needs_cuda": what} if run.smoke else {}


# --- checks ----------------------------------------------------------------------------------------------------------

def environment(run: Run) -> dict:
    import accelerate
    import transformers
    from common import machine

    record = {"commit": commit(), "machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
              "transformers": transformers.__version__, "accelerate": accelerate.__version__,
              "cuda_available": torch.cuda.is_available(), **run.recipe}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        record.update(gpu=properties.name, gpus=torch.cuda.device_count(),
                      capability=[properties.major, properties.minor], cuda=torch.version.cuda,
                      memory_gib=round(properties.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                      bf16_native=properties.major >= 8, bf16_supported=torch.cuda.is_bf16_supported(),
                      tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    record["tolerance"] = "CUDA present, bf16 native (compute capability >= 8.0)"
    record["pass"] = bool(run.smoke or record.get("bf16_native"))
    return record | needs_cuda(run, "GPU name, capability, memory, bf16")


def commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return head + ("+changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None  # a copy of the tree without .git


def loss_kernel(run: Run) -> dict:
    """The training loss on one micro-batch's logits: kernels launched by forward + backward, time, exactness."""
    from torch.profiler import ProfilerActivity, profile

    rows, vocab = run.micro_batch_tokens, run.sizes.vocab
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(4, vocab, (rows,), generator=generator)
    labels[torch.rand(rows, generator=generator) < 0.1] = -100
    labels = labels.to(run.device)
    loss_fn = training_loss()
    cuda = run.device.type == "cuda"
    record = {"logits": [rows, vocab], "label_smoothing": 0.1}
    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        logits = (3 * torch.randn(rows, vocab, generator=generator)).to(run.device, dtype).requires_grad_()

        def step():
            logits.grad = None
            loss = loss_fn({"logits": logits[None]}, labels[None])
            loss.backward()
            return loss

        step()  # warm-up
        run.sync()
        start = time.perf_counter()
        loss = step()
        run.sync()
        seconds = time.perf_counter() - start
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA][: 1 + cuda]) as profiler:
            step()
            run.sync()
        if cuda:  # kernels, not copies or fills
            launches = sum(1 for event in profiler.events() if event.device_type == torch.autograd.DeviceType.CUDA
                           and not event.name.startswith(("Memcpy", "Memset")))
        else:
            launches = sum(1 for event in profiler.events() if event.name.startswith("aten::"))
        reference = logits.detach().float().requires_grad_()
        expected = F.cross_entropy(reference, labels, label_smoothing=0.1, reduction="sum") / (labels != -100).sum()
        expected.backward()
        record[name] = {"kernels_per_step" if cuda else "cpu_aten_ops_per_step": launches,
                        "ms_per_step": round(1000 * seconds, 2),
                        "loss_relative_difference": abs(float(loss) - float(expected)) / float(expected),
                        "grad_relative_difference": relative(logits.grad, reference.grad.to(dtype))}
    record["tolerance"] = ("1 to 100 CUDA kernels per forward + backward (0: the profiler saw none); loss within 1e-5 and gradient within 1e-2 "
                           "(bf16) / 1e-5 (fp32) of F.cross_entropy(label_smoothing=0.1) in fp32")
    exact = all(record[d]["loss_relative_difference"] <= 1e-5 and record[d]["grad_relative_difference"] <= limit
                for d, limit in (("bfloat16", 1e-2), ("float32", 1e-5)))
    few = run.smoke or all(0 < record[d]["kernels_per_step"] <= 100 for d in ("bfloat16", "float32"))
    return record | {"pass": exact and few} | needs_cuda(run, "kernel launches (counted here: CPU aten ops)")


def attention_kernels(run: Run) -> dict:
    """Eager vs SDPA (any kernel, then flash / memory-efficient / cuDNN forced) on a padded and an unpadded batch."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = new_model(run.sizes.preset, run.sizes.vocab, dropout=0.0).to(run.device).eval()
    loss_fn = training_loss()
    batches = {"padded": run.batches(1, 640, seed=1, shortest=0.1)[0],
               "unpadded": run.batches(1, 640, seed=2, shortest=1.0, stretch=0.0)[0]}
    kernels = {"sdpa": None, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION}
    limits = {"fp32": (1e-4, 1e-3), "bf16": (5e-2, 5e-2)}

    def outputs(batch, implementation, precision, backend):
        model.set_attn_implementation(implementation)
        model.zero_grad(set_to_none=True)
        with sdpa_kernel(backend) if backend else contextlib.nullcontext():
            out, loss = forward_loss(model, batch, loss_fn, precision)
            loss.backward()
        valid = batch["labels"] != -100
        return out.logits[valid].float(), {n: p.grad.float() for n, p in model.named_parameters()}

    record, ok = {"preset": run.sizes.preset, "data": DATA_NOTE}, True
    for batch_name, batch in batches.items():
        record[batch_name] = {"shape": list(batch["input_ids"].shape),
                              "padding": round(1 - float(batch["attention_mask"].float().mean()), 3)}
        for precision, (logit_limit, grad_limit) in limits.items():
            logits_ref, grads_ref = outputs(batch, "eager", precision, None)
            results = {}
            for kernel, backend in kernels.items():
                try:
                    logits, grads = outputs(batch, "sdpa", precision, backend)
                except RuntimeError as error:  # "No available kernel": the kernel does not take this mask/dtype
                    results[kernel] = {"refused": str(error).splitlines()[0][:200]}
                    continue
                grad = max(float((grads[n] - g).norm() / g.norm().clamp(min=1e-30)) for n, g in grads_ref.items())
                results[kernel] = {"logits_relative_difference": relative(logits, logits_ref),
                                   "grad_relative_difference": grad}
                ok &= results[kernel]["logits_relative_difference"] <= logit_limit and grad <= grad_limit
            ok &= "refused" not in results["sdpa"]
            record[batch_name][precision] = results
    record["tolerance"] = ("vs eager in the same precision, logits max|diff|/max|eager| and per-parameter gradient "
                           "norm ratio: fp32 <= 1e-4 and 1e-3, bf16 autocast <= 5e-2; SDPA must run, forced kernels "
                           "may refuse a batch (listed)")
    return record | {"pass": bool(ok)} | needs_cuda(run, "flash/efficient/cuDNN kernels (CPU has its own)")


def precision_training(run: Run) -> dict:
    """The same batches and start in fp32, bf16 autocast and fp16 autocast + GradScaler, with the Noam schedule."""
    from vanilla_transformer.training.schedule import base_lr, noam_scheduler

    s = run.sizes
    batches = run.batches(s.steps, run.micro_batch_tokens, seed=3)
    loss_fn = training_loss()
    record = {"preset": s.preset, "vocab": s.vocab, "batch_tokens": run.micro_batch_tokens, "warmup_steps": run.warmup,
              "data": DATA_NOTE, "label_smoothing": 0.1}
    share = min(run.seconds_left(), 60 if run.smoke else 240) / 3  # seconds per precision at most
    for precision in ("fp32", "bf16", "fp16"):
        deadline = time.monotonic() + share
        model = new_model(s.preset, s.vocab).to(run.device).train()
        optimizer = adam(model, base_lr(model.config.d_model))
        scheduler = noam_scheduler(optimizer, run.warmup)
        scaler = torch.amp.GradScaler(run.device.type) if precision == "fp16" else None
        torch.manual_seed(0)  # the same dropout masks in each precision
        losses, skipped, start = [], 0, time.perf_counter()
        for batch in batches:
            _, loss = forward_loss(model, batch, loss_fn, precision)
            if scaler:
                scale = scaler.get_scale()
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                stepped = scaler.get_scale() >= scale
                skipped += not stepped
            else:
                loss.backward()
                optimizer.step()
                stepped = True
            if stepped:  # as the Trainer: the schedule counts updates made
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            if time.monotonic() > deadline:
                break
        run.sync()
        losses = torch.stack(losses).float().tolist()
        record[precision] = {"loss_at": {k: round(losses[k - 1], 4) for k in s.report_at if k <= len(losses)},
                             "steps": len(losses), "seconds": round(time.perf_counter() - start, 1),
                             "lr_at_last": scheduler.get_last_lr()[0]}
        if scaler:
            record[precision] |= {"skipped_steps": skipped, "final_scale": scaler.get_scale()}
        del model, optimizer
        empty_cache(run)
    precisions = ("fp32", "bf16", "fp16")
    complete = all(record[p]["steps"] == s.steps for p in precisions)
    losses = {p: record[p]["loss_at"] for p in precisions}
    falls = complete and all(math.isfinite(v) for p in precisions for v in losses[p].values()) and all(
        losses[p][s.report_at[-1]] < losses[p][s.report_at[0]] for p in precisions)
    band = complete and all(abs(losses[p][k] - v) <= 0.03 * v
                            for p in ("bf16", "fp16") for k, v in losses["fp32"].items())
    few_skips = record["fp16"]["skipped_steps"] <= 0.05 * s.steps
    record["tolerance"] = (f"all {s.steps} steps run; each loss falls from step {s.report_at[0]} to "
                           f"{s.report_at[-1]}; bf16 and fp16 within 3% of fp32 at every step reported; fp16 skips "
                           "<= 5% of steps")
    return record | {"pass": bool(complete and falls and band and few_skips)}


def throughput(run: Run) -> dict:
    """Training tokens/s and peak memory of base and big at the recipe's micro-batch and at a GPU-sized batch."""
    from vanilla_transformer.training.schedule import base_lr

    s = run.sizes
    bf16 = run.smoke or torch.cuda.get_device_properties(0).major >= 8
    precision = "bf16" if bf16 else "fp32"  # the recipe's precision "auto"
    record, ok = {"precision": precision, "data": DATA_NOTE, "cases": {}}, True
    for preset in s.speed_presets:
        for tokens in (run.micro_batch_tokens, s.gpu_batch_tokens):
            case = f"{preset}_{tokens}_tokens"
            if run.seconds_left() < 20:
                record["cases"][case] = {"skipped": "time budget"}
                ok = False
                continue
            model = new_model(preset, s.vocab).to(run.device).train()
            optimizer = adam(model, base_lr(model.config.d_model))
            loss_fn = training_loss()
            batches = run.batches(s.speed_steps + 3, tokens, seed=4)
            if run.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                counted, seconds = 0, 0.0
                for i, batch in enumerate(batches):
                    run.sync()
                    start = time.perf_counter()
                    _, loss = forward_loss(model, batch, loss_fn, precision)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    run.sync()
                    if i >= 3:  # three warm-up steps
                        seconds += time.perf_counter() - start
                        counted += batch_tokens(batch)
                result = {"tokens_per_s": round(counted / seconds),
                          "ms_per_step": round(1000 * seconds / s.speed_steps, 1)}
                if run.device.type == "cuda":
                    total = torch.cuda.get_device_properties(0).total_memory
                    result |= {"max_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                               "max_memory_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
                    ok &= torch.cuda.max_memory_allocated() < 0.9 * total
            except torch.OutOfMemoryError as error:
                result, ok = {"out_of_memory": str(error).splitlines()[0][:200]}, False
            record["cases"][case] = result
            del model, optimizer, batches
            empty_cache(run)
    record["tolerance"] = "every case runs, peak allocated memory < 90% of the GPU's (tokens/s: figures only)"
    return record | {"pass": bool(ok)} | needs_cuda(run, "max_memory_allocated")


def copy_model(run: Run) -> dict:
    """A small model trained here for a few hundred steps to copy sentences of made-up words, saved as a run saves
    its model (with its tokenizer and the pipeline): decoding it gives real sentences, not a random model's loops."""
    from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.model_folder import make_portable
    from vanilla_transformer.training.schedule import base_lr, noam_scheduler

    s = run.sizes
    sentences = pseudo_sentences(4000, seed=0)
    tokenizer = train_tokenizer(texts=sentences, vocab_size=s.copy_vocab, show_progress=False)
    torch.manual_seed(0)
    config = VanillaTransformerConfig.from_tokenizer(tokenizer, preset=s.copy_preset, dropout=0.0, norm_first=True)
    model = VanillaTransformerForConditionalGeneration(config).to(run.device).train()
    optimizer = adam(model, base_lr(config.d_model))
    scheduler = noam_scheduler(optimizer, max(10, s.copy_steps // 6))
    rng = random.Random(0)
    for _ in range(s.copy_steps):
        texts = rng.sample(sentences, 64)
        batch = tokenizer(texts, text_target=texts, padding=True, return_tensors="pt").to(run.device)
        batch["labels"] = batch["labels"].masked_fill(batch["labels"] == tokenizer.pad_token_id, -100)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    folder = Path(run.workdir.name) / "copy-model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    make_portable(folder)
    return {"folder": folder, "tokenizer": tokenizer, "sentences": pseudo_sentences(64, seed=1),
            "model": f"trained here: copy task on made-up words, preset {s.copy_preset}, {len(tokenizer)} tokens, "
                     f"{s.copy_steps} steps, final loss {loss.item():.3f}"}


def given_model(folder: str) -> dict:
    """A model folder given by --model, with 8 English and 8 German sentences as its input."""
    from transformers import AutoTokenizer

    sentences = ["A dog runs across the meadow.", "Two children are playing football in the park.",
                 "The woman in the red coat is reading a book.", "A man is cooking dinner for his family.",
                 "Ein Hund rennt über die Wiese.", "Zwei Kinder spielen Fußball im Park.",
                 "Die Frau im roten Mantel liest ein Buch.", "Ein Mann kocht das Abendessen für seine Familie.",
                 "The train to Berlin leaves at eight o'clock.", "She has been working here for three years.",
                 "Please close the window, it is getting cold.", "Prices rose sharply in the second quarter.",
                 "Der Zug nach Berlin fährt um acht Uhr ab.", "Sie arbeitet seit drei Jahren hier.",
                 "Bitte schließ das Fenster, es wird kalt.", "Die Preise stiegen im zweiten Quartal stark an."]
    return {"folder": Path(folder), "tokenizer": AutoTokenizer.from_pretrained(folder, trust_remote_code=True),
            "sentences": sentences, "model": f"given: {folder}"}


def decoding(run: Run) -> dict:
    """Greedy and beam-4 outputs of the same model on the CPU and on CUDA (fp32, and bf16 weights on CUDA)."""
    from vanilla_transformer import VanillaTransformerForConditionalGeneration

    decoded = run.decoded_model()
    tokenizer, folder = decoded["tokenizer"], decoded["folder"]
    inputs = tokenizer(decoded["sentences"], padding=True, return_tensors="pt")
    models = {"cpu_fp32": VanillaTransformerForConditionalGeneration.from_pretrained(folder).eval(),
              "cuda_fp32": VanillaTransformerForConditionalGeneration.from_pretrained(folder).to(run.device).eval(),
              "cuda_bf16": VanillaTransformerForConditionalGeneration.from_pretrained(
                  folder, dtype=torch.bfloat16).to(run.device).eval()}
    record, ok = {"model": decoded["model"], "sentences": len(decoded["sentences"]),
                  "devices": ["cpu", run.device.type]}, True
    for beams in (1, 4):
        outputs = {}
        for name, model in models.items():
            with torch.inference_mode():
                ids = model.generate(**inputs.to(model.device), num_beams=beams, do_sample=False)
            outputs[name] = tokenizer.batch_decode(ids, skip_special_tokens=True)
        same = {name: sum(a == b for a, b in zip(outputs[name], outputs["cpu_fp32"])) for name in outputs
                if name != "cpu_fp32"}
        case = {f"identical_to_cpu_fp32_{name}": f"{count}/{len(decoded['sentences'])}" for name, count in same.items()}
        if decoded["model"].startswith("trained here"):
            case["copied_exactly_cuda_fp32"] = sum(a == b for a, b in zip(outputs["cuda_fp32"], decoded["sentences"]))
        case["example"] = outputs["cuda_fp32"][0][:100]
        record["greedy" if beams == 1 else "beam4"] = case
        ok &= same["cuda_fp32"] >= 0.95 * len(decoded["sentences"])
    record["tolerance"] = ">= 95% of sequences identical, CUDA fp32 vs CPU fp32, greedy and beam 4 (bf16: figures only)"
    return record | {"pass": bool(ok)} | needs_cuda(run, "a second device (both sides ran on the CPU)")


def loading(run: Run) -> dict:
    """from_pretrained(device_map="auto", dtype=bf16) of the saved model, and pipeline("translation", device=0)."""
    from transformers import pipeline

    from vanilla_transformer import VanillaTransformerForConditionalGeneration

    decoded = run.decoded_model()
    folder, tokenizer = decoded["folder"], decoded["tokenizer"]
    model = VanillaTransformerForConditionalGeneration.from_pretrained(folder, device_map="auto", dtype=torch.bfloat16)
    devices = sorted({str(p.device) for p in model.parameters()} | {str(b.device) for b in model.buffers()})
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    sentences = decoded["sentences"][:4]
    inputs = tokenizer(sentences, padding=True, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        generated = tokenizer.batch_decode(model.generate(**inputs, num_beams=4), skip_special_tokens=True)
    translator = pipeline("translation", model=str(folder), device=0 if run.device.type == "cuda" else -1,
                          trust_remote_code=True)
    translated = [result["translation_text"] for result in translator(sentences, num_beams=4)]
    record = {"model": decoded["model"], "device_map": getattr(model, "hf_device_map", None), "devices": devices,
              "dtypes": dtypes, "generate": [t[:100] for t in generated[:2]],
              "pipeline_device": str(translator.model.device), "pipeline": [t[:100] for t in translated[:2]], "pipeline_nonempty": sum(bool(t) for t in translated)}
    expected_device = "cuda:0" if run.device.type == "cuda" else "cpu"
    ok = (devices == [expected_device] and dtypes == ["bfloat16"] and translator.model.device.type == run.device.type
          and all(isinstance(t, str) for t in translated) and record["pipeline_nonempty"] > 0)
    record["tolerance"] = (f"every weight and buffer on {expected_device} in bf16; generate runs; the pipeline runs "
                           f"on {expected_device} and returns text (not all empty)")
    return record | {"pass": bool(ok)} | needs_cuda(run, "device_map onto a GPU, pipeline on device 0")


def compile_recompiles(run: Run) -> dict:
    """torch.compile of the model, as the Trainer's torch_compile does, in training steps (forward with the labels,
    the trainer's loss, backward) over batches of 10 shapes: compiles, graph breaks, loss and gradients vs eager."""
    from torch._dynamo.utils import counters

    s = run.sizes
    model = new_model(s.compile_preset, s.vocab, dropout=0.0).to(run.device).eval()  # eval: no dropout to compare
    loss_fn = training_loss()
    backend = "aot_eager" if run.smoke else "inductor"  # the smoke run traces forward and backward, compiles no code

    def step(forward, batch):
        return loss_fn(forward(**batch), batch["labels"])

    compiled = torch.compile(model, backend=backend)
    reasons = RecompileReasons()
    torch._dynamo.reset()
    counters.clear()
    shapes = varied_shapes(run, s.compile_shapes)
    per_shape, compiling, ok = [], 0, True
    with reasons:
        for batch in shapes:
            if run.seconds_left() < 90 and not run.smoke:  # a compile of this model can take a minute or more
                per_shape.append({"skipped": "time budget"})
                ok = False
                break
            model.zero_grad(set_to_none=True)
            eager_loss = step(model, batch)
            eager_loss.backward()
            eager_grad = model.lm_head.weight.grad.clone()
            model.zero_grad(set_to_none=True)
            graphs = counters["stats"]["unique_graphs"]
            start = time.perf_counter()
            loss = step(compiled, batch)
            loss.backward()
            run.sync()
            new_graphs = counters["stats"]["unique_graphs"] - graphs
            compiling += new_graphs > 0
            loss_difference = abs(float(loss) - float(eager_loss)) / abs(float(eager_loss))
            grad_difference = relative(model.lm_head.weight.grad, eager_grad)
            ok &= loss_difference <= 1e-4 and grad_difference <= 1e-3
            per_shape.append({"shape": shape_of(batch), "new_graphs": new_graphs,
                              "seconds": round(time.perf_counter() - start, 1),
                              "loss_relative_difference": loss_difference, "grad_relative_difference": grad_difference})
            if compiling > 2 and len(per_shape) >= 3:
                break  # over the tolerance already: the time goes to nothing else
    breaks = counters["graph_break"]
    record = {"preset": s.compile_preset, "backend": backend, "shapes_run": len(per_shape),
              "shapes_that_compiled": compiling, "graph_breaks": sum(breaks.values()),
              "first_graph_break": " ".join(next(iter(breaks)).split())[:400] if breaks else None,
              "recompile_reasons": reasons.first(3), "per_shape": per_shape}
    record["tolerance"] = (f"<= 2 of {s.compile_shapes} batch shapes compile (the first; the second, which differs in "
                           "batch size and both lengths, with dynamic sizes); loss within 1e-4 and lm_head gradient "
                           "within 1e-3 of eager")
    return record | {"pass": bool(ok and compiling <= 2)} | needs_cuda(run, "inductor code generation")


def shape_of(batch) -> list[int]:
    """[pairs, source length, target length]."""
    return [*batch["input_ids"].shape, batch["labels"].shape[1]]


def varied_shapes(run: Run, count: int) -> list:
    """`count` token batches of different shapes, none with a size of 1 (torch specialises 0 and 1), the second
    differing from the first in every size: under torch.compile's default (dynamic=None) the first compiles with
    static sizes, the second with dynamic ones, which should then serve every later shape."""
    batches = []
    for seed in range(10, 10_000):
        batch, shapes = run.batches(1, run.micro_batch_tokens, seed=seed)[0], [shape_of(b) for b in batches]
        shape = shape_of(batch)
        if 1 in shape or shape in shapes or len(batches) == 1 and any(a == b for a, b in zip(shape, shapes[0])):
            continue
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


class RecompileReasons(logging.Handler):
    """Collects dynamo's "Recompiling function ..." messages while in its `with` block."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def __enter__(self):
        torch._logging.set_logs(recompiles=True)
        logging.getLogger("torch._dynamo").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("torch._dynamo").removeHandler(self)
        torch._logging.set_logs()

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Recompiling") and message not in self.messages:
            self.messages.append(message)

    def first(self, count: int) -> list[str]:
        return [" ".join(m.split())[:300] for m in self.messages[:count]]


def empty_cache(run: Run) -> None:
    if run.device.type == "cuda":
        torch.cuda.empty_cache()


CHECKS = {"environment": environment, "loss_kernel": loss_kernel, "attention_kernels": attention_kernels,
          "precision_training": precision_training, "throughput": throughput,
          "cpu_vs_cuda_decoding": decoding, "load_and_pipeline": loading, "compile": compile_recompiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="checks left after this time are skipped")
    parser.add_argument("--model", help="a saved model folder to decode, load and run in the pipeline (default: a "
                                        "copy-task model trained here)")
    parser.add_argument("--recipe", default=str(REPO / "configs/wmt14-en-de-base.yaml"),
                        help="the recipe whose micro-batch and warmup the checks use")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks only")
    parser.add_argument("--cpu-smoke", action="store_true", help="without CUDA: every check at the tiny preset on CPU")
    args = parser.parse_args()
    if args.model and not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json there")
    if not torch.cuda.is_available() and not args.cpu_smoke:
        emit({"check": "environment", "cuda_available": False, "torch": torch.__version__,
              "skipped": "no CUDA device: nothing to check (--cpu-smoke runs the checks on CPU at a tiny size)"})
        return
    run = Run(args)
    emit({"run": "gpu_check", "argv": sys.argv[1:], "budget_minutes": args.budget_minutes,
          "device": "cpu (smoke)" if run.smoke else "cuda"})
    for name, check in CHECKS.items():
        if args.only and name not in args.only:
            continue
        if run.seconds_left() <= 0:
            emit({"check": name, "skipped": f"time budget of {args.budget_minutes} minutes spent"})
            continue
        start = time.perf_counter()
        try:
            record = {"check": name} | check(run)
        except Exception as error:  # noqa: BLE001 - one check's failure must not stop the others
            frame = traceback.extract_tb(error.__traceback__)[-1]
            record = {"check": name, "error": f"{type(error).__name__}: {error}"[:1000],
                      "at": f"{Path(frame.filename).name}:{frame.lineno}",
                      "traceback": traceback.format_exc().splitlines()[-12:]}
            empty_cache(run)
        emit(record | {"seconds": round(time.perf_counter() - start, 1)})
    run.workdir.cleanup()


if __name__ == "__main__":
    main()
