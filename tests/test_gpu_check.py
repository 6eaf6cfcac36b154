"""benchmarks/gpu_check.py without a GPU: the one line saying so, and every check run on CPU by --cpu-smoke."""

import json
import os
import subprocess
import sys

from conftest import REPO, tiny_model

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
CHECKS = ["environment", "loss_kernel", "attention_kernels", "precision_training", "throughput",
          "cpu_vs_cuda_decoding", "load_and_pipeline", "compile"]


def gpu_check(tmp_path, *args: str) -> list[dict]:
    """The script's JSON lines, run as a user runs it, with CUDA hidden (the same test on a machine with a GPU)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    (line,) = gpu_check(tmp_path)
    assert line["cuda_available"] is False and "no CUDA device" in line["skipped"]


def test_cpu_smoke_runs_every_check(tmp_path):
    run, *records = gpu_check(tmp_path, "--cpu-smoke")
    assert run["device"] == "cpu (smoke)"
    assert [record["check"] for record in records] == CHECKS
    for record in records:
        assert "error" not in record and "skipped" not in record, record
        assert record["pass"] is True and record["tolerance"], record
    by_name = {record["check"]: record for record in records}
    assert "needs_cuda" in by_name["loss_kernel"] and by_name["loss_kernel"]["bfloat16"]["cpu_aten_ops_per_step"] > 0
    assert by_name["precision_training"]["fp16"]["steps"] == 8
    assert by_name["cpu_vs_cuda_decoding"]["model"].startswith("trained here")
    assert by_name["load_and_pipeline"]["pipeline_nonempty"] > 0


def test_spent_budget_skips_the_checks_left(tmp_path):
    _, *records = gpu_check(tmp_path, "--cpu-smoke", "--budget-minutes", "0")
    assert [record["check"] for record in records] == CHECKS
    assert all("time budget" in record["skipped"] for record in records)


def test_a_failing_check_is_reported_and_the_others_run(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check as script

    def broken(run):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(script.CHECKS, "loss_kernel", broken)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--cpu-smoke", "--only", "loss_kernel", "environment"])
    script.main()
    environment, failed = (json.loads(line) for line in capsys.readouterr().out.splitlines()[1:])
    assert failed["check"] == "loss_kernel" and failed["error"].startswith("RuntimeError: CUDA error")
    assert failed["at"].startswith("test_gpu_check.py:") and environment["pass"] is True


def test_a_given_model_is_decoded_and_loaded(tmp_path):
    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.model_folder import make_portable

    folder = tmp_path / "model"
    tokenizer = train_tokenizer(texts=["A dog runs.", "Ein Hund rennt."] * 20, vocab_size=300, show_progress=False)
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    make_portable(folder)
    _, decoding, loading = gpu_check(tmp_path, "--cpu-smoke", "--model", str(folder), "--only", "cpu_vs_cuda_decoding",
                                     "load_and_pipeline")
    for record in (decoding, loading):  # an untrained model: its text may be empty, but the checks run
        assert "error" not in record and record["model"] == f"given: {folder}", record
    assert decoding["greedy"]["identical_to_cpu_fp32_cuda_fp32"] == "16/16"


def test_a_model_folder_without_config_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--model", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and f"--model {tmp_path}: no config.json there" in result.stderr
