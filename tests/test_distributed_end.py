"""The end of a run of several processes: every process takes part in the final save and in the test translation
(sharded, gathered in order), and `--resume` agrees on one checkpoint on machines that do not share a disk."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import accelerate_launch, free_port, launch_env
from test_training import train_args
from transformers import AutoTokenizer

from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.evaluation import decoding_settings, translate


@pytest.fixture(scope="module")
def two_process_run(small_corpus, tmp_path_factory):
    """A run of 2 gloo processes: checkpoints at 2 and 4, averaged, then 15 test sentences translated."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    command = accelerate_launch("-m", "vanilla_transformer.cli", *train_args(
        small_corpus, out, "training.max_steps=4", "training.save_steps=2", "average_last=2", "data.test=test2016",
        "data.test_size=15", "generation.num_beams=2", "generation.eval_batch_size=4"))
    # The final save and the translation are collectives: a process that skipped one would hang the other.
    result = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_test_split_is_translated_by_every_process_in_order(two_process_run, small_corpus):
    results = json.loads((two_process_run / "results.json").read_text())
    assert results["averaged_checkpoints"] == ["checkpoint-2", "checkpoint-4"]
    assert results["test"]["sentences"] == 15
    sources = (small_corpus / "test2016.de").read_text(encoding="utf-8").splitlines()[:15]
    model = VanillaTransformerForConditionalGeneration.from_pretrained(two_process_run / "model")
    tokenizer = AutoTokenizer.from_pretrained(two_process_run / "model")
    decoding = decoding_settings(2, results["test"]["length_penalty"])
    one_process = translate(model, tokenizer, sources, batch_size=4, progress=False, **decoding)
    assert (two_process_run / "test2016.hyp.en").read_text(encoding="utf-8").splitlines() == one_process


AGREE = """
import sys
from pathlib import Path
from accelerate import PartialState
from vanilla_transformer.training.checkpoints import CheckpointError, resume_checkpoint

state = PartialState(cpu=True)
run = Path(sys.argv[1]) / f"machine{state.process_index}"
try:
    answer = f"resumes from {resume_checkpoint(run, state).name}"
except CheckpointError as error:
    answer = f"error: {error}"
(Path(sys.argv[1]) / f"answer{state.process_index}.txt").write_text(answer)  # not stdout, which both share
"""


def test_resume_takes_the_newest_checkpoint_complete_on_every_machine(two_process_run, tmp_path):
    # Each process has a run folder of its own, as on machines without a shared disk.
    for machine, steps in ((0, (2, 4)), (1, (2,))):
        for step in steps:
            shutil.copytree(two_process_run / f"checkpoint-{step}", tmp_path / f"machine{machine}/checkpoint-{step}")
    script = tmp_path / "agree.py"
    script.write_text(AGREE)

    def launch() -> list[str]:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), str(script), str(tmp_path)]
        result = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        return [(tmp_path / f"answer{rank}.txt").read_text() for rank in (0, 1)]

    assert launch() == ["resumes from checkpoint-2"] * 2
    shutil.rmtree(tmp_path / "machine1")
    out = launch()
    held = "no checkpoint-N folder is complete on every process of the launch (process 0: checkpoint-2, checkpoint-4; "
    assert all(held + "process 1: none)" in answer for answer in out), out


def test_resume_on_a_machine_without_the_checkpoints_fails_on_both_at_once(two_process_run, small_corpus, tmp_path):
    # Before: the second machine raised at once, the first waited at the next barrier until ddp_timeout (here 10
    # minutes, past the test's timeout).
    shutil.copytree(two_process_run, tmp_path / "machine0/run", ignore=shutil.ignore_patterns("model"))
    port, launches = free_port(), []
    for machine in (0, 1):
        train = train_args(small_corpus, tmp_path / f"machine{machine}/run", "training.ddp_timeout=600")
        command = accelerate_launch("-m", "vanilla_transformer.cli", *train, "--resume", processes=2, machines=2,
                                    machine_rank=machine, port=port)
        env = launch_env(HF_DATASETS_CACHE=str(tmp_path / f"machine{machine}/cache"))
        launches.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         text=True))
    for launch in launches:
        stderr = launch.communicate(timeout=120)[1]
        assert launch.returncode != 0
        assert "no checkpoint-N folder is complete on every process of the launch" in stderr, stderr[-3000:]
