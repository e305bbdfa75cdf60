"""issue 28 part 4: every verb that runs a model takes --device, the device reaches the loaders, and no code puts a
tensor on a device written into it. On this CPU-only machine: --device cpu works, --device cuda is one clear line."""
import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch

from tenfold.cli import build_parser, iter_parsers
from tenfold.errors import TenfoldError

SRC = Path(__file__).resolve().parents[1] / "src" / "tenfold"

# Leaf verbs that run no model, or whose model's device is not theirs to choose. A new verb must either take
# --device or be listed here with its reason.
NO_DEVICE = {
    ("models",): "lists models; loads none",
    ("data", "prepare"): "downloads corpora and converts the bundled GGUF to safetensors (no forward pass)",
    ("doctor",): "reports versions and caches; loads no model",
    ("report",): "rebuilds HTML from JSON results",
    ("ndp", "train"): "NDP growth networks are small numpy programs evaluated in gymnasium (no torch model)",
    ("ndp", "show"): "renders a saved NDP run (no torch model)",
    ("stop", "utility"): "scores programs in the sandbox; no model",
    ("stop", "seed"): "prints the seed improver program",
    ("stop", "describe"): "prints a task's description",
    ("stop", "sandbox-bench"): "times the program sandbox; no model",
    ("radit", "data"): "renders the QA corpus from tables",
    ("vision", "world"): "renders synthetic scenes",
    ("vision", "parse"): "reads a rendered scene back with pixel rules; no model",
    ("lmm", "suite"): "writes a suite of prompts; no model",
    # Training: every loop runs on models.finetune's Accelerator, which places the model itself (the process's GPU
    # when torch sees one; `accelerate launch --cpu` or CUDA_VISIBLE_DEVICES choose, configs/accelerate/ for more).
    ("pause", "pretrain"): "training: the device is accelerate's",
    ("pause", "finetune"): "training: the device is accelerate's",
    ("radit", "train-lm"): "training: the device is accelerate's",
    ("radit", "train-retriever"): "training: the device is accelerate's (LSR scoring runs on the default device)",
    ("vision", "train-clip"): "training: the device is accelerate's",
    ("vision", "train-vlm"): "training: the device is accelerate's",
    ("kosmos-g", "train"): "training: the device is accelerate's",
}


def _leaf_verbs():
    for path, parser in iter_parsers(build_parser()):
        if path and not any(a.__class__.__name__ == "_SubParsersAction" for a in parser._actions):
            yield path, parser


def test_every_verb_that_runs_a_model_takes_device():
    leaves = dict(_leaf_verbs())
    assert set(NO_DEVICE) <= set(leaves), f"stale exclusions: {set(NO_DEVICE) - set(leaves)}"
    missing, needless = [], []
    for path, parser in leaves.items():
        options = {o for a in parser._actions for o in a.option_strings}
        if path in NO_DEVICE:
            if "--device" in options:
                needless.append(" ".join(path))
        elif "--device" not in options:
            missing.append(" ".join(path))
    assert not missing, f"verbs without --device (add it, or list them in NO_DEVICE with a reason): {missing}"
    assert not needless, f"verbs listed in NO_DEVICE that do take --device: {needless}"
    # the verbs of the issue are among those that take it
    for verb in [("generate",), ("stream-ppl",), ("chat",), ("serve",), ("rag", "ask"), ("rag", "index"),
                 ("probes", "extract"), ("vision", "ask"), ("kosmos-g", "generate"), ("reproduce",)]:
        assert verb not in NO_DEVICE and verb in leaves


# --- no hard-coded device in src/ ---------------------------------------------------------------------------------

# path under src/tenfold -> (how many device literals it may hold, why)
ALLOWED = {
    "devices.py": (2, "the device-resolution module itself (the names of the CPU and of CUDA)"),
    "models/decode_attention.py": (1, "a comparison: the half-precision decode kernel is a CPU fast path"),
    "models/int4_load.py": (1, "int4 weights are CPU-only; load_lm refuses int4 on any other device"),
    "streaming/compiled.py": (2, "CPU-only checks: a C++ compiler and the vector level matter for CPU steps"),
    "provenance.py": (2, "the dict key naming the machine's processor model, not a device"),
}


def device_literals(source: str) -> list[int]:
    """Line numbers of string literals that are a device name (cpu, cuda, cuda:N) and of ``.cuda(`` calls."""
    lines = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                continue  # an f-string
            if isinstance(value, str) and (value in ("cpu", "cuda") or value.startswith("cuda:")):
                lines.append(tok.start[0])
        elif (tok.type == tokenize.NAME and tok.string == "cuda" and i > 0 and tokens[i - 1].string == "."
              and i + 1 < len(tokens) and tokens[i + 1].string == "("):
            lines.append(tok.start[0])
    return lines


def test_the_scanner_finds_hard_coded_devices():
    assert device_literals('m = SentenceTransformer(p, device="cpu")\n') == [1]
    assert device_literals("x = torch.zeros(3,\n device='cuda:1')\n") == [2]
    assert device_literals("x = x.cuda()\n") == [1]
    assert device_literals('"""Runs on the cpu."""\nhelp = "cpu or cuda"\nx = t.to(model.device)\n') == []


def test_no_tensor_is_placed_on_a_hard_coded_device():
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        hits = device_literals(path.read_text())
        if hits or rel in ALLOWED:
            found[rel] = hits
    wrong = {rel: hits for rel, hits in found.items() if len(hits) != ALLOWED.get(rel, (0, ""))[0]}
    assert not wrong, (f"device literals outside tenfold.devices (use the model's device or resolve_device; or "
                       f"allow-list them with a reason): {wrong}")


# --- the device module ------------------------------------------------------------------------------------------

def test_resolve_device_on_this_machine(monkeypatch):
    from tenfold.devices import default_dtype, resolve_device

    monkeypatch.delenv("TENFOLD_DEVICE", raising=False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda:0") == torch.bfloat16  # by name: no GPU needed to know the default
    for bad in ("gpu", "cuda:x", "cpu:0 ", "tpu"):
        with pytest.raises(TenfoldError, match="unknown device"):
            resolve_device(bad)
    monkeypatch.setenv("TENFOLD_DEVICE", "cpu")  # what `reproduce --device` sets for loaders given no device
    assert resolve_device(None) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused():
    from tenfold.devices import resolve_device

    for name in ("cuda", "cuda:0", "auto"):
        if name == "auto":
            assert resolve_device(name).type == "cpu"
            continue
        with pytest.raises(TenfoldError, match="sees no CUDA GPU"):
            resolve_device(name)


# --- through the CLI ------------------------------------------------------------------------------------------

def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tenfold", *args], capture_output=True, text=True, timeout=timeout)


def _one_line_error(res, needle):
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("verb", [["generate", "hi"], ["stream-ppl", "--book", "emma", "--tokens", "8"],
                                  ["rag", "ask", "q", "--doc", __file__], ["probes", "extract", "--dataset", "world-places"],
                                  ["serve"], ["chat"], ["reproduce", "streaming-ppl"]])
def test_unknown_device_is_one_line(verb):
    _one_line_error(run_cli(*verb, "--device", "gpu0", timeout=120), "unknown device 'gpu0'")


@pytest.mark.parametrize("name", ["cuda:01", "cuda:99999999999999999999", "cuda:\u0663", "cuda:-1", "mps", ""])
def test_odd_device_names_are_one_line(name):
    """Names torch.device itself cannot parse (a leading zero, a huge index, a non-ASCII digit) are refused at parse
    time like any unknown name, not by a traceback from torch."""
    _one_line_error(run_cli("generate", "hi", "--device", name, timeout=120), "unknown device")


def test_garbage_tenfold_device_names_the_variable(monkeypatch):
    from tenfold.devices import resolve_device

    monkeypatch.setenv("TENFOLD_DEVICE", "garbage")
    with pytest.raises(TenfoldError, match="TENFOLD_DEVICE"):
        resolve_device(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("verb", [["generate", "hi"], ["stream-ppl", "--book", "emma", "--tokens", "8"],
                                  ["rag", "ask", "Where?", "--doc", __file__, "--mode", "long"], ["serve"],
                                  ["reproduce", "streaming-ppl", "--profile", "smoke"]])
def test_cuda_without_a_gpu_is_one_line_through_the_cli(verb, tmp_path):
    extra = ["--out", str(tmp_path / "report")] if verb[0] == "reproduce" else []
    _one_line_error(run_cli(*verb, *extra, "--device", "cuda", timeout=300), "torch sees no CUDA GPU")
    assert not (tmp_path / "report" / "results").exists()  # refused before any experiment ran


def test_int4_on_a_gpu_is_refused(monkeypatch):
    from tenfold.models import load_lm

    # pretend torch sees one GPU: the refusal comes before anything is loaded or placed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TenfoldError, match="int4 quantization runs on the CPU, not on cuda"):
        load_lm(quantize="int4", device="cuda")
    with pytest.raises(TenfoldError, match="torch sees 1 GPU"):
        load_lm(device="cuda:1")


def test_explicit_cpu_runs_generate_and_stream_ppl(tmp_path):
    res = run_cli("generate", "What is the capital of France?", "--max-new-tokens", "6", "--dtype", "float32",
                  "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "Paris" in res.stdout
    res = run_cli("stream-ppl", "--book", "emma", "--tokens", "40", "--window", "16", "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    assert '"ppl"' in res.stdout


def test_explicit_cpu_runs_rag(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("Mr. Darcy lived at Pemberley in Derbyshire. Elizabeth Bennet lived at Longbourn in Hertfordshire.")
    res = run_cli("rag", "index", str(doc), "--out", str(tmp_path / "idx"), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    res = run_cli("rag", "ask", "Where did Mr. Darcy live?", "--index", str(tmp_path / "idx"), "--mode", "retrieve",
                  "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "Pemberley" in res.stdout


def test_loaders_take_a_device():
    from tenfold.models import load_embedder, load_lm

    model, _ = load_lm(quantize=None, device="cpu")
    assert next(model.parameters()).device.type == "cpu" and model.dtype == torch.float32
    emb = load_embedder(device="cpu")
    assert emb.device.type == "cpu"
    with pytest.raises(TenfoldError, match="unknown device"):
        load_embedder(device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of a GPU on a machine without one")
@pytest.mark.parametrize("name", ["tpu", "", "mps", 5, torch.device("mps"), "cuda", "cuda:7", torch.device("cuda:3")])
def test_library_loaders_raise_value_error_for_a_bad_device(name):
    """A library caller gets a ValueError (the exception for a bad argument value), before anything is loaded."""
    from tenfold.models import load_embedder, load_lm
    from tenfold.models.finetune import load_model

    for loader in (load_lm, load_embedder, load_model):
        with pytest.raises(ValueError, match="unknown device|sees no CUDA GPU"):
            loader(None, device=name)


def test_load_lm_passes_device_map_through(monkeypatch):
    from transformers import AutoModelForCausalLM

    from tenfold.models import load_lm

    seen, real = [], AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model, _ = load_lm(quantize=None, device_map="cpu")  # a real load through accelerate's placement
    assert seen == ["cpu"] and model.device.type == "cpu"
    model, _ = load_lm(quantize=None)
    assert seen == ["cpu", None]  # no map unless asked: from_pretrained's own default
    with pytest.raises(TenfoldError, match="takes no device_map"):
        load_lm(quantize="int4", device_map="auto")


def test_training_batches_follow_the_accelerators_device(monkeypatch):
    """The loops on train_steps build batches on the CPU; on a GPU the accelerator's device differs, and every batch
    must move there before the forward pass (CLIP's pixels and captions did not: a device mismatch on any one-GPU
    machine). Stand-in for a GPU here: the accelerator reports the "meta" device, so a CPU tensor reaching the
    meta-device model fails with "not on the expected device"; moved batches get through forward and backward and
    stop only where the loop reads the loss's value (.item() on meta)."""
    import accelerate

    from tenfold.vision.clip import small_clip, train_clip, world_tokenizer

    monkeypatch.setattr(accelerate.Accelerator, "device", property(lambda self: torch.device("meta")))
    tok = world_tokenizer()
    with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
        train_clip(small_clip(len(tok), image_size=32, width=32, layers=1, patch_size=8), tok, steps=1, batch_size=4,
                   image_size=32)


@pytest.mark.parametrize("verb", [["generate", "hi"], ["serve"]])
def test_a_verb_without_device_follows_tenfold_device(verb):
    """`tenfold reproduce --device X` sets $TENFOLD_DEVICE for what it runs, subprocesses included (serve-load starts
    `tenfold serve`): a verb given no --device reads it (was: the flag's own default, auto, won)."""
    import os

    res = subprocess.run([sys.executable, "-m", "tenfold", *verb], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TENFOLD_DEVICE": "tpu"})
    _one_line_error(res, "TENFOLD_DEVICE: unknown device 'tpu'")


def test_training_runs_on_the_cpu_when_the_cpu_was_chosen(monkeypatch):
    """With a GPU present, `--device cpu` (TENFOLD_DEVICE=cpu) keeps the shared training loop on the CPU; auto takes
    the GPU. (A GPU is simulated: torch.cuda.is_available is patched, and Accelerator only records its arguments.)"""
    import accelerate

    from tenfold.models import finetune

    chosen = []

    class Recorded(Exception):
        pass

    def accelerator(**kwargs):
        chosen.append(kwargs["cpu"])
        raise Recorded

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(accelerate, "Accelerator", accelerator)
    module = torch.nn.Linear(2, 1)
    for env in ("cpu", "auto"):
        monkeypatch.setenv("TENFOLD_DEVICE", env)
        with pytest.raises(Recorded):
            finetune.train_steps(module, torch.optim.SGD(module.parameters(), lr=0.1), lambda s: None,
                                 lambda m, b: None, steps=1)
    assert chosen == [True, False]
