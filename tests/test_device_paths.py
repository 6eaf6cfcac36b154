"""The model's accelerator paths, run on CPU: the loss kernel's chunks, torch.compile over batch shapes, no host syncs,
device_map="auto" across GPUs, and the attention kernels it refuses."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch, tiny_model
from torch.utils._python_dispatch import TorchDispatchMode

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, modeling
from vanilla_transformer.modeling_kernels import LabelSmoothedCrossEntropy


def loss_and_gradient(logits, labels, epsilon, device_type):
    x = logits.detach().requires_grad_()
    loss = LabelSmoothedCrossEntropy.apply(x, labels, epsilon, device_type)
    loss.backward()
    return loss, x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_accelerator_loss_path_equals_the_cpu_kernel(dtype):
    # 700 x 9,000 logits: the CPU path takes 3 chunks of 233 rows, an accelerator's one chunk of all.
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(700, 9000, generator=generator).mul_(3).to(dtype)
    labels = torch.randint(0, 9000, (700,), generator=generator)
    labels[::7] = -100
    cpu_loss, cpu_grad = loss_and_gradient(logits, labels, 0.1, "cpu")
    loss, grad = loss_and_gradient(logits, labels, 0.1, "cuda")
    # The same fp32 arithmetic row by row, in other slices: equal to fp32 rounding, and bf16 gradients to one bf16
    # rounding of it (2^-8 relative).
    torch.testing.assert_close(loss, cpu_loss, rtol=1e-6, atol=0)
    tolerance = {"rtol": 1e-6, "atol": 1e-9} if dtype == torch.float32 else {"rtol": 2**-8, "atol": 1e-9}
    torch.testing.assert_close(grad, cpu_grad, **tolerance)
    assert not grad[::7].any()  # ignored rows count nothing
    reference = F.cross_entropy(logits.float(), labels, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=0)


def test_accelerator_loss_path_takes_few_operators_per_call():
    # The case, a 6,250-token micro-batch over a 37k vocabulary, on the meta device (nothing is computed),
    # counted as benchmarks/bench_loss.py reports it.
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from bench_loss import operators_per_call

    operators = {device_type: operators_per_call(6250, 37000, 0.1, device_type) for device_type in ("cpu", "cuda")}
    assert operators["cuda"] <= 40, operators  # one chunk: 29 operators with torch 2.13
    assert operators["cpu"] > 1500, operators  # 112 chunks of 56 rows, 18 operators each


def compile_counter():
    """A torch.compile backend (aot_eager, which also traces the backward) that counts the graphs given to it."""
    from torch._dynamo.backends.debugging import aot_eager

    def backend(graph, example_inputs):
        backend.graphs += 1
        return aot_eager(graph, example_inputs)

    backend.graphs = 0
    return backend


# (batch, source length, target length): 8 shapes, none of them 1 (torch specialises sizes 0 and 1).
SHAPES = [(2, 5, 4), (3, 7, 6), (4, 9, 3), (5, 6, 8), (6, 11, 7), (7, 4, 10), (8, 12, 5), (3, 13, 9)]


@pytest.mark.parametrize("training", [True, False], ids=["training-forward-with-loss", "logits-forward"])
def test_torch_compile_compiles_twice_at_most_over_batch_shapes(training):
    # torch.compile's default (dynamic=None, as the Trainer's torch_compile uses it): the first shape is compiled
    # static, the second with dynamic sizes, which must serve every later one. aot_eager, not inductor: the graphs,
    # their guards and the backward are the same, without minutes of C++ compilation on 2 cores.
    torch._dynamo.reset()
    model = tiny_model().train(training)
    backend = compile_counter()
    compiled = torch.compile(model, backend=backend)
    for batch, source_length, target_length in SHAPES:
        source = random_batch(batch, source_length, seed=batch)
        mask = torch.ones_like(source)
        mask[0, source_length // 2:] = 0  # padding
        targets = random_batch(batch, target_length, seed=source_length)
        if training:
            targets[0, -1] = -100
            inputs = {"input_ids": source, "attention_mask": mask, "labels": targets}
            got, expected = compiled(**inputs), model(**inputs)
            got_gradient = torch.autograd.grad(got.loss, model.model.shared.weight)[0]
            expected_gradient = torch.autograd.grad(expected.loss, model.model.shared.weight)[0]
            torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got_gradient, expected_gradient, rtol=1e-5, atol=1e-6)
        else:
            inputs = {"input_ids": source, "attention_mask": mask, "decoder_input_ids": targets}
            with torch.no_grad():
                got, expected = compiled(**inputs), model(**inputs)
        # fp32, the same operators in another order: to within 1e-5 (inductor, tried once, differs by 2e-6).
        torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-5)
    assert backend.graphs <= 2, f"{backend.graphs} compiles over {len(SHAPES)} batch shapes"
    torch._dynamo.reset()


class SyncCounter(TorchDispatchMode):
    """Counts reads of a tensor's value on the host (item, bool, int): each one waits for an accelerator."""

    def __init__(self):
        super().__init__()
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.syncs += func.overloadpacket.__name__ == "_local_scalar_dense"
        return func(*args, **(kwargs or {}))


def training_step_syncs(model) -> int:
    source = random_batch(3, 9)
    mask = torch.ones_like(source)
    mask[1, 6:] = 0
    labels = random_batch(3, 7, seed=1)
    labels[2, 5:] = -100
    with SyncCounter() as counter:
        output = model(input_ids=source, attention_mask=mask, labels=labels, num_items_in_batch=torch.tensor(40))
        output.loss.backward()
    return counter.syncs


def test_no_host_sync_in_a_training_step_on_accelerators(monkeypatch):
    model = tiny_model(dropout=0.1).train()
    assert training_step_syncs(model) > 0  # on CPU, the checks read their answers: they are free there
    monkeypatch.setattr(modeling, "on_host", lambda tensor: False)  # the branch an accelerator's tensors take
    assert training_step_syncs(model) == 0


def test_on_accelerators_bad_ids_and_lengths_still_fail(monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(modeling, "on_host", lambda tensor: False)
    # On CPU torch._assert_async fails at once; on CUDA it fails at the next synchronisation.
    with pytest.raises(RuntimeError, match="input_ids contains an id outside the vocabulary of 99 tokens"):
        model(input_ids=torch.tensor([[5, 1000]]), decoder_input_ids=random_batch(1, 3))
    with pytest.raises(RuntimeError, match="labels contains an id outside the vocabulary of 99 tokens"):
        model(input_ids=random_batch(1, 5), labels=torch.tensor([[5, -5]]))
    with pytest.raises(RuntimeError, match="exceeds max_position_embeddings=64"):
        model.model.decoder.check_length(torch.tensor(60), 5)  # a static cache's length, a tensor
    # Lengths are shapes: checked on the host, with the CPU's message, wherever the tensors are.
    with pytest.raises(ValueError, match="sequence of 65 tokens exceeds max_position_embeddings=64"):
        model(input_ids=random_batch(1, 65), decoder_input_ids=random_batch(1, 3))


@pytest.mark.filterwarnings("ignore:The following device_map keys", "ignore:Accessing the data pointer of FakeTensor")
def test_device_map_auto_over_four_gpus_keeps_each_sum_on_one_device():
    from accelerate import dispatch_model, init_empty_weights
    from torch._subclasses.fake_tensor import FakeTensorMode

    # The map from_pretrained(device_map="auto") computes for the big preset on 4 GPUs of 10 GiB, no GPU needed: the
    # decoder's positional encodings go to another GPU than the embeddings, and so may the output projection (4.57
    # places it apart, accelerate then copies the tied matrix to its GPU).
    with init_empty_weights():
        empty = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.from_preset("big"))
    max_memory = {gpu: "10GiB" for gpu in range(4)}
    try:  # transformers 5
        from transformers.integrations.accelerate import _get_device_map

        device_map = _get_device_map(empty, "auto", max_memory, None)
    except ImportError:  # transformers 4.57
        from transformers.modeling_utils import _get_device_map

        device_map = _get_device_map(empty, "auto", max_memory, None, torch.float32, None)
    assert device_map["model.shared"] == 0 and device_map["model.decoder.embed_positions"] == 1, device_map
    if device_map["lm_head"] != device_map["model.shared"]:
        pytest.skip("accelerate keys a tied matrix's copies by data_ptr, which fake tensors lack (transformers 4.57)")
    # The same modules of a small model, dispatched by accelerate over fake GPUs: fake tensors carry their device
    # and refuse to mix two, without CUDA. (Autograd, and some indexing, refuse fake GPUs: the embeddings' sum and
    # the output projection are what the map splits.)
    model = tiny_model(encoder_layers=6, decoder_layers=6)
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        dispatch_model(model, {name: f"cuda:{gpu}" for name, gpu in device_map.items()})
        assert model.model.decoder.embed_positions.weight.device == torch.device("cuda:1")
        ids = torch.randint(4, 99, (2, 5), device="cuda:0")
        embedded = model.model.decoder.embed(ids, None, torch.arange(5, device="cuda:0"))
        assert embedded.device == torch.device("cuda:0")
        logits = model.lm_head(torch.zeros(2, 5, 32, device="cuda:2"))
        assert logits.device == torch.device("cuda:0")


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flex_attention"])
def test_flash_and_flex_attention_are_refused_by_name(kernel):
    # Their masks differ from the model's (see VanillaTransformerPreTrainedModel): refused, not silently wrong.
    config = VanillaTransformerConfig.from_preset("tiny", attn_implementation=kernel)
    with pytest.raises(ValueError, match="does not support"):
        VanillaTransformerForConditionalGeneration(config)
