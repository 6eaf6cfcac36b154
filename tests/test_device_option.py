"""evaluate, translate and show-attention on a chosen device and dtype (issue 29, point 8): bf16 on the CPU through
the command line, the default device and dtype where an accelerator is (mocked), and the values refused."""

import json

import pytest
import torch
from test_cli_errors import cli_error

from vanilla_transformer import translators
from vanilla_transformer.cli import main

SENTENCES = 12  # the first test2016 pairs, which conftest's memorized model learns by heart


def test_evaluate_and_translate_in_bf16_on_the_cpu(memorized, tmp_path, capsys):
    model_dir, corpus, de, en = memorized
    reports = {}
    for dtype in ("fp32", "bf16"):
        main(["evaluate", str(model_dir), "--data", str(corpus), "--split", "train", "--num-beams", "2",
              "--device", "cpu", "--dtype", dtype, "--out", str(tmp_path / dtype)])
        reports[dtype] = json.loads((tmp_path / dtype / "report.json").read_text(encoding="utf-8"))
    assert "sentences/s on cpu in bf16" in capsys.readouterr().out
    assert (reports["bf16"]["device"], reports["bf16"]["dtype"]) == ("cpu", "bf16")
    assert (reports["fp32"]["device"], reports["fp32"]["dtype"]) == ("cpu", "fp32")
    assert reports["fp32"]["bleu"] > 40, "the model did not learn its sentences"
    assert reports["bf16"]["bleu"] > reports["fp32"]["bleu"] - 10
    hypotheses = {dtype: (tmp_path / dtype / "train.hyp.en").read_text(encoding="utf-8").splitlines()
                  for dtype in reports}
    assert sum(a == b for a, b in zip(hypotheses["fp32"], hypotheses["bf16"])) >= SENTENCES * 3 // 4

    # In one batch, as evaluate translated them: the same padding, so the same bf16 arithmetic.
    main(["translate", str(model_dir), *de, "--num-beams", "2", "--device", "cpu", "--dtype", "bf16"])
    assert capsys.readouterr().out.splitlines() == hypotheses["bf16"]


def test_the_model_is_loaded_in_the_dtype_asked_for_and_show_attention_draws_it(memorized, tmp_path, monkeypatch):
    model_dir, _, de, _ = memorized
    model, _ = translators.load_model(str(model_dir), "cpu", "bf16")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    main(["show-attention", str(model_dir), de[0], "--out", str(tmp_path / "attention.png"), "--num-beams", "1",
          "--device", "cpu", "--dtype", "bf16"])
    assert (tmp_path / "attention.png").stat().st_size > 1000


def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)


def cuda_card(monkeypatch, capability: tuple[int, int], count: int = 1):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


@pytest.mark.parametrize("capability, dtype", [
    ((9, 0), "bf16"), ((8, 0), "bf16"), ((8, 6), "bf16"),  # H100, A100, RTX 30x0: bf16 in the tensor cores
    ((7, 0), "fp16"), ((7, 5), "fp16"),  # V100, T4: bf16 emulated, fp16 native
    ((6, 0), "fp32"),  # P100: no tensor cores
])
def test_on_a_cuda_card_auto_is_cuda_and_the_dtype_it_computes_natively(monkeypatch, capability, dtype):
    no_accelerator(monkeypatch)
    cuda_card(monkeypatch, capability)
    assert translators.placement("auto", "auto") == (torch.device("cuda"), dtype)
    assert translators.placement("auto", "fp32") == (torch.device("cuda"), "fp32")
    assert translators.placement("cpu", "auto") == (torch.device("cpu"), "fp32")


@pytest.mark.parametrize("available, device", [("mps", "mps"), ("xpu", "xpu"), (None, "cpu")])
def test_without_cuda_auto_is_mps_or_xpu_else_the_cpu_in_fp32(monkeypatch, available, device):
    no_accelerator(monkeypatch)
    if available:
        backend = torch.backends.mps if available == "mps" else torch.xpu
        monkeypatch.setattr(backend, "is_available", lambda: True)
    assert translators.placement("auto", "auto") == (torch.device(device), "fp32")
    assert translators.placement("auto", "bf16") == (torch.device(device), "bf16")


@pytest.mark.parametrize("accelerator, device", [("cuda", "cuda"), ("mps", "cpu"), (None, "cpu")])
def test_ctranslate2_runs_on_cuda_where_there_is_one_else_on_the_cpu(monkeypatch, accelerator, device):
    pytest.importorskip("ctranslate2")
    from vanilla_transformer.engines import ctranslate2

    no_accelerator(monkeypatch)
    if accelerator == "cuda":
        cuda_card(monkeypatch, (8, 0))
    elif accelerator == "mps":
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)

    class Engine:
        def __init__(self, path, device, **options):
            self.device, self.translator = device, type("Translator", (), {"compute_type": "int8_float32"})

    monkeypatch.setattr(ctranslate2, "Translator", Engine)
    translate_lines = translators.line_translator("exported", "ctranslate2", num_beams=1, length_penalty=1.0,
                                                  batch_size=8)
    assert (translate_lines.device, translate_lines.dtype) == (device, "int8_float32")


@pytest.mark.parametrize("command", ["translate", "evaluate", "show-attention"])
@pytest.mark.parametrize("options, expected", [
    (["--device", "cuda"], "argument --device: cuda: torch {version} sees no cuda device here"),
    (["--device", "nonsense"], "argument --device: 'nonsense' is not a device: use cpu, cuda, cuda:N, mps, xpu"),
    (["--device", "meta"], "argument --device: 'meta' is not a device"),
    (["--dtype", "fp64"], "argument --dtype: invalid choice: 'fp64'"),
])
def test_a_device_or_dtype_torch_cannot_use_is_refused_naming_the_option(monkeypatch, tmp_path, capsys, command,
                                                                         options, expected):
    no_accelerator(monkeypatch)
    arguments = {"translate": ["Ein Hund."], "show-attention": ["Ein Hund.", "--out", tmp_path / "a.png"],
                 "evaluate": ["--data", tmp_path, "--out", tmp_path / "eval"]}[command]
    message = cli_error(capsys, command, tmp_path / "no-model", *arguments, *options)
    assert expected.format(version=torch.__version__) in message
    assert not list(tmp_path.iterdir())


def test_a_card_that_is_not_there_is_refused_naming_the_option(monkeypatch, tmp_path, capsys):
    no_accelerator(monkeypatch)
    cuda_card(monkeypatch, (8, 0), count=2)
    message = cli_error(capsys, "translate", tmp_path, "Ein Hund.", "--device", "cuda:2")
    assert "argument --device: cuda:2: torch sees 2 cuda device(s) here, numbered from 0" in message


@pytest.mark.parametrize("options, expected", [
    (["--dtype", "fp16"], "--dtype fp16 is the torch engine's: the ctranslate2 engine computes in its --compute-type"),
    (["--device", "mps"], "--device mps: the ctranslate2 engine runs on cpu or cuda"),
    (["--device", "cuda:1"], "--device cuda:1: the ctranslate2 engine runs on cpu or cuda (its first card)"),
])
def test_ctranslate2_refuses_a_dtype_and_devices_it_has_not(monkeypatch, tmp_path, capsys, options, expected):
    no_accelerator(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "device_count", lambda: 1)
    cuda_card(monkeypatch, (8, 0), count=2)
    message = cli_error(capsys, "translate", tmp_path, "Ein Hund.", "--engine", "ctranslate2", *options)
    assert expected in message
