"""Training steps per second with 1 vs N ``accelerate`` processes, in one run (a ratio, not an absolute speed).

:func:`accelerate_overhead` trains the same small causal LM on the same global batches twice - once as one plain
process, once under ``accelerate launch --multi_gpu`` with N processes (gloo on CPU when torch sees no GPU) - through :func:`tenfold.models.finetune.fit`, and reports steps per second of each and
their ratio. The first step of each run (allocation, DDP's first bucket set-up) is left out of the timing.
On a machine with fewer cores than N processes x threads, the ratio measures the overhead of splitting the
batch and all-reducing the gradients, not a speed-up. Run it as ``python -m tenfold.models.scale``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from tenfold.errors import TenfoldError

def _tiny_lm(vocab: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                                        tie_word_embeddings=True))


def _worker(out: Path, steps: int, batch_size: int, seq_len: int, vocab: int = 512, seed: int = 0) -> None:
    """Train and, in the main process, write ``{"processes", "steps_per_s", "losses"}`` to ``out``."""
    from tenfold.models.finetune import fit, process_state

    model = _tiny_lm(vocab, seed)

    def batch_for_step(step: int) -> dict:
        ids = torch.randint(0, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed + step))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    ticks = []
    losses = fit(model, batch_for_step, steps=steps, lr=1e-3, seed=seed,
                 progress=lambda step, total, loss: ticks.append((time.perf_counter(), time.process_time())))
    state = process_state()
    cpu = (ticks[-1][1] - ticks[0][1]) / (len(ticks) - 1)  # this process's CPU seconds per step
    out.with_suffix(f".cpu{state.process_index}").write_text(str(cpu))
    if state.is_main_process:
        out.write_text(json.dumps({"processes": state.num_processes, "losses": losses,
                                   "steps_per_s": (len(ticks) - 1) / (ticks[-1][0] - ticks[0][0])}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_overhead(steps: int = 30, batch_size: int = 8, seq_len: int = 64, processes: int = 2,
                        timeout: float = 600) -> dict:
    """Steps per second of ``fit`` with 1 and with ``processes`` processes on the same global batches.

    Each process runs one thread. Returns ``{"steps_per_s": {"1": float, "N": float}, "ratio_N_vs_1": float,
    "cpu_s_per_step (all processes)": {"1": float, "N": float}, "cpu_ratio_N_vs_1": float, "same_losses": bool,
    "cpu_cores": int, "note": str}``: wall-clock steps per second (noisy on a shared machine) and CPU seconds per
    step summed over the processes (the extra work of splitting and all-reducing; steadier); ``same_losses`` says the two runs' logged loss curves agree within 1e-4
    (the N-process run trains the same model, not another one). Raises TenfoldError for steps < 3, a batch smaller
    than ``processes``, or a run that fails (its last error line).
    """
    if steps < 3 or processes < 2 or batch_size < processes:
        raise TenfoldError("the benchmark needs steps >= 3, processes >= 2 and a batch of at least `processes` rows")
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, processes):
            out = Path(tmp) / f"{n}.json"
            args = ["-m", "tenfold.models.scale", "--worker", str(out), "--steps", str(steps), "--batch-size",
                    str(batch_size), "--seq-len", str(seq_len)]
            if n == 1:
                cmd = [sys.executable, *args]
            else:
                # the torchrun launcher; without a GPU tenfold's trainer joins the processes over gloo
                cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
                       "--main_process_port", str(_free_port()), *args]
            # one thread per process (N intra-op threads on a busy machine spin and time the machine, not tenfold)
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
            if r.returncode != 0 or not out.exists():
                lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
                raise TenfoldError(f"the {n}-process benchmark run failed: {lines[-1] if lines else 'no output'}")
            results[n] = json.loads(out.read_text())
            results[n]["cpu_s_per_step"] = sum(float(f.read_text()) for f in Path(tmp).glob(f"{n}.cpu*"))
    if results[processes]["processes"] != processes:
        raise TenfoldError(f"asked for {processes} processes, accelerate ran {results[processes]['processes']}")
    one, many = results[1]["steps_per_s"], results[processes]["steps_per_s"]
    same = max(abs(a - b) for a, b in zip(results[1]["losses"], results[processes]["losses"])) <= 1e-4
    cores = os.cpu_count() or 1
    device = "GPU" if torch.cuda.is_available() else "CPU"
    note = (f"{device}, {cores} cores, one thread per process, global batch {batch_size} x {seq_len} tokens, {steps} "
            f"steps (first left out). The CPU-time ratio is the overhead of {processes} processes (splitting the batch, "
            "all-reducing gradients over gloo): CPU seconds per step, all processes together, against one process. "
            + (f"On {cores} cores shared with whatever else runs, the steps-per-second ratio is a ratio of overhead "
               "and load, not a speed-up." if device == "CPU" and cores <= 2 * processes else
               "The steps-per-second ratio is the speed-up from data parallelism."))
    cpu1, cpun = results[1]["cpu_s_per_step"], results[processes]["cpu_s_per_step"]
    return {"steps_per_s": {"1": round(one, 3), str(processes): round(many, 3)},
            f"ratio_{processes}_vs_1": round(many / one, 3),
            "cpu_s_per_step (all processes)": {"1": round(cpu1, 4), str(processes): round(cpun, 4)},
            f"cpu_ratio_{processes}_vs_1": round(cpun / cpu1, 3), "same_losses": same, "cpu_cores": cores,
            "note": note}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tenfold.models.scale", description=__doc__.splitlines()[0])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--processes", type=int, default=2)
    args = p.parse_args(argv)
    try:
        if args.worker:
            _worker(Path(args.worker), args.steps, args.batch_size, args.seq_len)
        else:
            print(json.dumps(accelerate_overhead(args.steps, args.batch_size, args.seq_len, args.processes), indent=1))
    except TenfoldError as exc:
        print(f"tenfold: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
