"""A real client nobody here wrote: lm-evaluation-harness scores a log-likelihood task against ``tenfold serve``.

Its ``local-completions`` model sends token-id prompts with ``echo`` and ``logprobs`` and reads the prompt's own
log-probabilities; the accuracy must equal the harness's in-process ``hf`` model on the same weights, and every
per-choice log-likelihood must agree closely. The task is a local YAML over a local JSONL file (no Hub access).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "lm_eval_facts.jsonl"


def _task(tmp: Path) -> Path:
    tasks = tmp / "tasks"
    tasks.mkdir()
    (tasks / "tenfold_facts.yaml").write_text(f"""task: tenfold_facts
dataset_path: json
dataset_kwargs:
  data_files:
    test: {DATA}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
""")
    return tasks


def _evaluate(model: str, model_args: str, tasks: Path, out: Path, batch: int) -> tuple[float, list[float]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args, "--tasks", "tenfold_facts",
           "--include_path", str(tasks), "--output_path", str(out), "--log_samples", "--batch_size", str(batch), "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    acc = results["results"]["tenfold_facts"]["acc,none"]
    samples = [json.loads(line) for line in next(out.rglob("samples_tenfold_facts_*.jsonl")).read_text().splitlines()]
    samples.sort(key=lambda s: s["doc_id"])
    loglik = [float(resp[0][0]) for s in samples for resp in s["resps"]]
    return acc, loglik


def test_lm_eval_local_completions_matches_in_process(server, tmp_path):
    from tenfold.models.lm import cached_dir

    tasks = _task(tmp_path)
    remote = (f"model=smollm2-135m-instruct,base_url={server}/v1/completions,tokenizer={cached_dir()},"
              "tokenizer_backend=huggingface,tokenized_requests=True,num_concurrent=2,max_retries=1")
    acc_remote, ll_remote = _evaluate("local-completions", remote, tasks, tmp_path / "remote", 8)
    acc_local, ll_local = _evaluate("hf", f"pretrained={cached_dir()},dtype=float32", tasks, tmp_path / "local", 8)
    assert len(ll_remote) == len(ll_local) == 4 * len(DATA.read_text().splitlines())
    assert acc_remote == acc_local, (acc_remote, acc_local)
    assert max(abs(a - b) for a, b in zip(ll_remote, ll_local)) < 1e-3
    assert acc_remote > 0.25  # the task is easy enough that the model beats chance: the scores are not noise
