"""Two real processes on CPU (gloo) under ``accelerate launch``, against one process, through the CLI.

Pause pretraining and RA-DIT LM-ft at tiny sizes, with a global batch of 5 rows (3 + 2 rows on the two processes)
and uneven label-token counts (pauses carry no label; answers differ in length): the two-process loss curve and
weights must equal the one-process run's, which holds only if each process's loss is weighted by its share of
the batch's label tokens and the schedule steps once per step. A checkpoint saved under either process count
resumes under the other to the uninterrupted run's curve.

Tolerance: the two runs sum the same float32 terms in a different order (two partial gradients, then gloo's
all-reduce), so they agree to rounding, not bit for bit. The records are losses rounded to 5 decimals: we allow 1e-4.
On weights we allow 1e-4 after 6 AdamW steps at lr 3e-3: Adam divides by sqrt(v), so rounding noise in a gradient
element near zero can move that element by a fraction of lr. Measured on this machine: pause losses within 1e-5 (one
unit of the last logged decimal), weights within 1.7e-5; RA-DIT LM-ft losses equal, weights within 1.5e-7. Without
the token weighting the pause curves differ by 0.04.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CPU_CONFIG = ROOT / "configs" / "accelerate" / "cpu-2proc.yaml"
LOSS_TOL, WEIGHT_TOL = 1e-4, 1e-4

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tenfold(processes: int, *args, timeout=120) -> subprocess.CompletedProcess:
    """``tenfold ARGS`` as one process, or under ``accelerate launch`` with the shipped CPU config."""
    if processes == 1:
        cmd = [sys.executable, "-m", "tenfold", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
               "--num_processes", str(processes), "--main_process_port", str(_free_port()), "-m", "tenfold", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def losses(run: Path) -> list[float]:
    return json.loads((run / "state.json").read_text())["losses"]


def processes(run: Path) -> int:
    """How many processes trained the finished run (train_steps records it)."""
    return json.loads((run / "state.json").read_text())["processes"]


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors")


def assert_same_run(a: Path, b: Path) -> None:
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb)
    gap = max(abs(x - y) for x, y in zip(la, lb))
    assert gap <= LOSS_TOL, f"loss curves differ by {gap}: {la} vs {lb}"
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= WEIGHT_TOL, f"weights differ by up to {worst}"


# -- pause pretraining -------------------------------------------------------------------------------------------

PAUSE = ["--steps", "6", "--batch-size", "5", "--seq-len", "32", "--vocab-size", "400", "--lr", "3e-3",
         "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tenfold.pause.corpus import generic_lines

    path = tmp_path_factory.mktemp("pause") / "corpus.txt"
    path.write_text("\n".join(generic_lines(3000, seed=0)))
    return path


@pytest.fixture(scope="module")
def pause_one(corpus):
    out = corpus.parent / "one"
    r = tenfold(1, "pause", "pretrain", "--text", str(corpus), *PAUSE, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.timeout(90)
def test_pause_pretraining_on_two_processes_follows_the_one_process_curve(corpus, pause_one, tmp_path):
    two = tmp_path / "two"
    r = tenfold(2, "pause", "pretrain", "--text", str(corpus), *PAUSE, "--out", str(two))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("pretrained") == 1  # one process reports ...
    assert processes(pause_one) == 1 and processes(two) == 2  # ... of two that trained (not a lone process)
    assert losses(pause_one)[-1] < losses(pause_one)[0] - 0.3  # it learns, so equal curves mean something
    assert_same_run(pause_one, two)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_a_pause_checkpoint_resumes_under_the_other_process_count(corpus, pause_one, tmp_path, first, then):
    run = tmp_path / "run"
    r = tenfold(first, "pause", "pretrain", "--text", str(corpus), *PAUSE, "--stop-after", "3", "--out", str(run))
    assert r.returncode == (75 if first == 1 else 1), r.stderr  # torchrun reports a worker's 75 as its own 1
    assert "stopped after step 3 of 6" in r.stderr and (run / "checkpoint").is_dir()
    assert not (run / "model").exists() and json.loads((run / "state.json").read_text())["step"] == 3
    # each process saves its own RNG state: proof the launcher really started `first` processes
    assert sorted(p.name for p in (run / "checkpoint").glob("random_states_*.pkl")) == [
        f"random_states_{i}.pkl" for i in range(first)]
    r = tenfold(then, "pause", "pretrain", "--text", str(corpus), "--out", str(run), "--resume")
    assert r.returncode == 0, r.stderr
    assert not (run / "checkpoint").exists()
    assert_same_run(pause_one, run)


# -- RA-DIT LM-ft ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def radit(tmp_path_factory):
    """A small RA-DIT dataset and a tiny random Llama with the bundled model's tokenizer (chat template)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tenfold.models.lm import resolve

    root = tmp_path_factory.mktemp("radit")
    r = tenfold(1, "radit", "data", "--cities", "100", "--films", "100", "--out", str(root / "data"))
    assert r.returncode == 0, r.stderr
    tok = AutoTokenizer.from_pretrained(resolve(None))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                                         tie_word_embeddings=True))
    model.save_pretrained(root / "tinylm")
    tok.save_pretrained(root / "tinylm")
    return root


def lm_ft(root: Path) -> list[str]:
    return ["radit", "train-lm", "--data", str(root / "data"), "--model", str(root / "tinylm"), "--n-train", "12",
            "--k", "2", "--steps", "6", "--batch-size", "5", "--lr", "3e-3", "--lora-r", "4", "--checkpoint-every",
            "2"]


@pytest.fixture(scope="module")
def radit_one(radit):
    out = radit / "one"
    r = tenfold(1, *lm_ft(radit), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.timeout(90)
def test_radit_lm_ft_on_two_processes_follows_the_one_process_curve(radit, radit_one, tmp_path):
    r = tenfold(2, *lm_ft(radit), "--out", str(tmp_path / "two"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("LM-ft done") == 1 and processes(radit_one) == 1 and processes(tmp_path / "two") == 2
    assert losses(radit_one)[-1] < losses(radit_one)[0] - 0.01
    assert_same_run(radit_one, tmp_path / "two")


@pytest.mark.timeout(90)
def test_a_radit_lm_ft_checkpoint_saved_by_two_processes_resumes_in_one(radit, radit_one, tmp_path):
    run = tmp_path / "run"
    r = tenfold(2, *lm_ft(radit), "--stop-after", "3", "--out", str(run))
    assert r.returncode == 1 and "stopped after step 3 of 6" in r.stderr, r.stderr
    r = tenfold(1, *lm_ft(radit), "--out", str(run), "--resume")
    assert r.returncode == 0, r.stderr
    assert_same_run(radit_one, run)


@pytest.mark.timeout(90)
def test_more_processes_than_batch_rows_is_one_error_line_not_one_per_process(corpus, tmp_path):
    """Every process runs the same checks on the same global state, so only the main one prints the error (the
    launcher adds its own summary of the failed processes, which is accelerate's, not ours)."""
    r = tenfold(3, "pause", "pretrain", "--text", str(corpus), *PAUSE[:2], "--batch-size", "2", "--seq-len", "32",
                "--vocab-size", "400", "--out", str(tmp_path / "run"))
    assert r.returncode != 0
    assert r.stderr.count("tenfold: error:") == 1, r.stderr
    assert "a global batch of 2 rows cannot be shared by 3 processes" in r.stderr


def test_a_stray_world_size_without_a_launcher_is_one_line(corpus, tmp_path):
    """WORLD_SIZE left in the environment (a job script) but no launcher: accelerate's ValueError, not a traceback."""
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK")}
    r = subprocess.run([sys.executable, "-m", "tenfold", "pause", "pretrain", "--text", str(corpus), *PAUSE,
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=60,
                       env=dict(env, WORLD_SIZE="2"), cwd=ROOT)
    assert r.returncode == 1 and r.stderr.startswith("tenfold: error: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "MASTER_ADDR" in r.stderr, r.stderr


def test_launched_processes_that_accelerate_cannot_join_are_a_clear_error(monkeypatch):
    from tenfold.errors import TenfoldError
    from tenfold.models import finetune

    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(TenfoldError, match="WORLD_SIZE must be a number"):
        finetune._launched_processes()


@pytest.mark.timeout(120)
def test_the_benchmark_times_the_same_training_on_one_and_two_processes():
    from tenfold.models.scale import accelerate_overhead

    out = accelerate_overhead(steps=4, batch_size=4, seq_len=16)
    assert out["same_losses"] and set(out["steps_per_s"]) == {"1", "2"} and all(v > 0 for v in out["steps_per_s"].values())
    assert out["ratio_2_vs_1"] == pytest.approx(out["steps_per_s"]["2"] / out["steps_per_s"]["1"], rel=0.01)
    assert out["cpu_ratio_2_vs_1"] > 0 and "processes" in out["note"]


def test_the_benchmark_refuses_settings_it_cannot_time():
    from tenfold.errors import TenfoldError
    from tenfold.models.scale import accelerate_overhead

    with pytest.raises(TenfoldError, match="steps >= 3"):
        accelerate_overhead(steps=2)
    with pytest.raises(TenfoldError, match="at least `processes` rows"):
        accelerate_overhead(batch_size=1)
