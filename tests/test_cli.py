import json
import subprocess
import sys

import pytest

from tenfold.cli import main
from tenfold.report.verdict import Check, exact


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tenfold.cli", *args], capture_output=True, text=True, timeout=600)


def test_help_lists_every_verb():
    out = run_cli("--help").stdout
    for verb in ("generate", "models", "data", "reproduce", "report"):
        assert verb in out


@pytest.mark.parametrize(
    "args,needle",
    [(["nonsense-verb"], "invalid choice"), (["reproduce", "--profile", "huge"], "invalid choice"),
     (["generate"], "required"), (["reproduce", "no-such-experiment"], "unknown experiment"),
     (["generate", "hi", "--model", "no/such/model"], "unknown model"), (["report", "/nonexistent/dir"], "not found")],
)
def test_bad_arguments_give_one_line_errors(args, needle):
    res = run_cli(*args)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "smollm2-135m-instruct"


@pytest.mark.slow
def test_generate_streams_an_answer():
    for dtype in ("float32", "auto"):  # auto: int4 for the bundled model (issue 25)
        res = run_cli("generate", "What is the capital of France?", "--max-new-tokens", "12", "--dtype", dtype)
        assert res.returncode == 0, res.stderr
        assert "Paris" in res.stdout, dtype


@pytest.mark.slow
def test_generate_dtype_reaches_the_loader(tmp_path):
    """--dtype int4 on a model whose MLP width (100) PyTorch's int4 packer cannot take is refused in one line, while
    float32 and auto (a model you name keeps float32) generate: the flag decides how the model is loaded."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tenfold.models.lm import cached_dir, convert_bundled

    convert_bundled()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(cached_dir() / name, tmp_path / name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=100, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    refused = run_cli("generate", "Hi", "--model", str(tmp_path), "--max-new-tokens", "2", "--dtype", "int4")
    assert refused.returncode == 1 and "int4: " in refused.stderr and "features 100" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    for dtype in ("float32", "auto"):
        res = run_cli("generate", "Hi", "--model", str(tmp_path), "--max-new-tokens", "2", "--dtype", dtype)
        assert res.returncode == 0, (dtype, res.stderr)


# --- every verb behaves like a good CLI (issue 29) ---

HEAVY = ("torch", "transformers", "sentence_transformers", "diffusers", "faiss", "accelerate", "peft", "matplotlib",
         "gymnasium", "sklearn", "scipy")


def _verbs():
    from tenfold.cli import build_parser, iter_parsers

    return [path for path, _ in iter_parsers(build_parser())]


def test_the_verb_walk_covers_subverbs():
    verbs = _verbs()
    assert () in verbs and ("generate",) in verbs and ("rag", "index") in verbs and ("pause", "pretrain") in verbs
    assert ("analogical", "eval") in verbs and len(verbs) > 30


@pytest.mark.parametrize("path", _verbs(), ids=lambda p: " ".join(p) or "tenfold")
def test_every_verb_help_works_and_shows_defaults(path, capsys):
    import argparse

    from tenfold.cli import build_parser, iter_parsers

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*path, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tenfold") and "Traceback" not in out
    flat = " ".join(out.split())  # argparse wraps lines
    parser = dict(iter_parsers(build_parser()))[path]
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default is None or default is False or default == [] \
                or default is argparse.SUPPRESS or action.help is argparse.SUPPRESS:
            continue
        says = f"default: {default}" in flat or "default" in (action.help or "")
        assert says, f"{' '.join(path)} {action.option_strings[0]} hides its default"


# Leaf verbs without --json, each with its reason: they produce no result to print, only a conversation or a service.
# Group parents (`tenfold rag`, `tenfold pause`, ...) are not leaves. Every other verb prints one JSON object or list on
# stdout with --json (tests/test_json_output.py runs the cheap ones).
NO_JSON = {("chat",): "interactive: the result is the conversation", ("serve",): "a long-running server"}


def test_every_verb_that_produces_a_result_has_json():
    import argparse

    from tenfold.cli import build_parser, iter_parsers

    leaves = {path: parser for path, parser in iter_parsers(build_parser()) if path and not any(
        isinstance(a, argparse._SubParsersAction) for a in parser._actions)}
    assert set(NO_JSON) <= set(leaves), f"stale exclusions: {set(NO_JSON) - set(leaves)}"
    missing = [" ".join(path) for path, parser in leaves.items()
               if path not in NO_JSON and not any("--json" in a.option_strings for a in parser._actions)]
    assert missing == [], f"verbs without --json: {missing}"
    assert len(leaves) - len(NO_JSON) >= 30


def _probe_startup(argv: list[str]) -> dict:
    code = ("import json, sys, time\nt = time.perf_counter()\nfrom tenfold.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps({{'s': time.perf_counter() - t, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}),"
            " file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return json.loads(res.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["rag", "index", "--help"], ["serve", "--help"]])
def test_help_and_version_import_no_heavy_library(argv):
    # measured, not timed: start-up stays under a second as long as building the parser imports none of these
    got = _probe_startup(argv)
    assert got["heavy"] == [], f"building the parser imported {got['heavy']}"


def test_version_prints_the_version():
    import tenfold

    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"tenfold {tenfold.__version__}"


def _one_line_error(res, needle):
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert needle in lines[0], lines[0]
    assert res.stdout == ""


@pytest.mark.parametrize("args,needle", [
    (["generate", "hi", "--max-new-tokens", "-1"], "--max-new-tokens: must be at least 1"),
    (["generate", "hi", "--max-new-tokens", "many"], "is not an integer"),
    (["generate", "hi", "--temperature", "-1"], "--temperature: must be 0 (greedy) or more"),
    (["generate", "hi", "--temperature", "nan"], "not a finite number"),
    (["generate", "hi", "--top-p", "2"], "--top-p: must be in (0, 1]"),
    (["generate", "hi", "--top-p", "0"], "--top-p: must be in (0, 1]"),
    (["analogical", "eval", "--strategy", "analogical", "--task", "gsm", "--temperature", "-1"], "--temperature"),
    (["reproduce", "--profile", "huge"], "invalid choice"),
    (["chat", "--temperature", "-1"], "--temperature: must be 0 (greedy) or more"),
    (["chat", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
    (["lmm", "run", "suite.json", "--out", "x", "--max-tokens", "0"], "--max-tokens: must be at least 1"),
    (["vision", "ask", "a.png", "what?", "--vlm", "x", "--max-tokens", "-5"], "--max-tokens: must be at least 1"),
    # a seed numpy refuses (negative) or torch overflows on (past 2**64) was a traceback after the model loaded
    (["generate", "hi", "--seed", "-1"], "--seed: must be between 0 and 4294967295 (got -1)"),
    (["generate", "hi", "--seed", "99999999999999999999999"], "--seed: must be between 0 and 4294967295"),
    (["stop", "utility", "--task", "parity", "--seed", "-1", "prog.py"], "--seed: must be between 0 and 4294967295"),
    (["ndp", "train", "--task", "xor", "--seed", "-2"], "--seed: must be between 0 and 4294967295"),
    # a typo in an image side asked for tens of GiB (the process was killed for memory)
    (["vision", "world", "--n", "1", "--out", "x", "--size", "100000"], "--size: must be between 32 and 4096"),
    (["lmm", "suite", "--out", "x", "--size", "99999"], "--size: must be between 32 and 4096"),
    # said "(bad: [])", not which value was wrong
    (["lmm", "suite", "--out", "x", "--n", "0"], "--n must be at least 1 and --size at least 32 (got n=0, size=128)"),
    # were accepted, then every request failed with a misleading line ("sent something that is not a chat completion")
    (["lmm", "run", "suite.json", "--out", "x", "--timeout", "0"], "--timeout: must be more than 0"),
    (["lmm", "run", "suite.json", "--out", "x", "--timeout", "nan"], "--timeout: 'nan' is not a finite number"),
    (["lmm", "run", "suite.json", "--out", "x", "--rate", "-1"], "--rate: must be more than 0"),
    (["lmm", "run", "suite.json", "--out", "x", "--concurrency", "0"], "--concurrency: must be at least 1"),
    (["kosmos-g", "generate", "--model", "m", "--prompt", "a", "--out", "x.png", "--size", "99999"],
     "--size: must be between 32 and 4096"),
    # an empty or suffix-less --plot silently wrote nothing / failed after minutes of work
    (["stream-ppl", "--text", "t.txt", "--plot", ""], "--plot: is empty"),
    (["stream-ppl", "--text", "t.txt", "--plot", "ppl"], "--plot: ppl: give a file ending in .png"),
    # a negative checkpoint interval acted as its absolute value; a negative --stop-after never stopped
    (["pause", "pretrain", "--out", "r", "--checkpoint-every", "-5"], "--checkpoint-every: must be 0 or more"),
    (["pause", "pretrain", "--out", "r", "--stop-after", "0"], "--stop-after: must be at least 1"),
    (["radit", "train-lm", "--out", "r", "--checkpoint-every", "-1"], "--checkpoint-every: must be 0 or more"),
])
def test_bad_values_are_refused_by_the_parser(args, needle):
    _one_line_error(run_cli(*args), needle)


def test_out_naming_an_existing_file_is_one_line_before_any_work(tmp_path):
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    _one_line_error(run_cli("reproduce", "streaming-memory", "--out", str(existing)), "is an existing file")
    _one_line_error(run_cli("probes", "plot", "--dataset", "world-places", "--out", str(existing)),
                    "is an existing file")
    assert existing.read_text() == "keep me"


def test_pause_resume_refuses_new_limits_in_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = {"text": None, "size": "tiny", "seq_len": 64, "vocab_size": 1024, "pause_rate": 0.1, "steps": 400,
             "batch_size": 32, "lr": 1e-3, "seed": 0, "checkpoint_every": 100}
    (run / "args.json").write_text(json.dumps(saved))
    (run / "state.json").write_text(json.dumps({"step": 100}))
    res = run_cli("pause", "pretrain", "--out", str(run), "--resume", "--steps", "8")
    _one_line_error(res, "cannot change --steps 8 (the run's: 400)")
    res = run_cli("pause", "pretrain", "--out", str(run), "--resume", "--steps", "400", "--lr", "0.5", "--seed", "0")
    _one_line_error(res, "cannot change --lr 0.5 (the run's: 0.001)")  # the same values may be repeated
    assert "--steps" not in res.stderr and "--seed" not in res.stderr


def test_reproduce_list(capsys):
    assert main(["reproduce", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert {"streaming-ppl", "probes", "pause", "kosmos-g"} <= set(names) and all(r["claim"] for r in rows)
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in names)
    assert main(["reproduce", "ndp", "pause", "ndp", "--list", "--json"]) == 0  # names: those only, once each
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["ndp", "pause"]
    assert main(["reproduce", "no-such", "--list"]) == 1 and "unknown experiment 'no-such'" in capsys.readouterr().err


@pytest.fixture
def failing_experiment():
    from tenfold.report.registry import REGISTRY, experiment, load_all

    load_all()

    @experiment("test-always-fails", "ndp", "an experiment that always fails", {})
    def _fails(run):
        run.progress("about to fail")
        raise RuntimeError("boom")

    @experiment("test-always-works", "ndp", "an experiment that always works", {})
    def _works(run):
        return {"ours": {"x": 1}, "checks": [Check("x", exact(1.0))], "why": "it works"}

    yield
    REGISTRY.pop("test-always-fails")
    REGISTRY.pop("test-always-works")


def test_reproduce_exits_non_zero_when_an_experiment_failed(tmp_path, capsys, failing_experiment):
    assert main(["reproduce", "test-always-works", "--out", str(tmp_path), "--profile", "smoke"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"Report: {tmp_path / 'index.html'}"  # stdout carries the result only

    rc = main(["reproduce", "test-always-works", "test-always-fails", "--out", str(tmp_path), "--profile", "smoke",
               "--json"])
    out = capsys.readouterr()
    assert rc == 1
    got = json.loads(out.out)  # progress went to stderr, so stdout is exactly the JSON
    assert got["failed"] == ["test-always-fails"]
    assert "1 of 2 experiment(s) failed: test-always-fails" in out.err.strip().splitlines()[-1]
    assert "failed" in (tmp_path / "index.html").read_text()


@pytest.mark.slow
def test_progress_goes_to_a_terminal_on_stderr_and_never_to_stdout(tmp_path, run_on_a_terminal):
    from tenfold.pause.corpus import generic_lines

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(generic_lines(3000, seed=0)))
    args = [sys.executable, "-m", "tenfold", "pause", "pretrain", "--text", str(text), "--steps", "4", "--vocab-size",
            "400", "--checkpoint-every", "2"]
    # --json keeps the bar (issue 29): stdout is the JSON, the bar is on the terminal
    rc, out, seen = run_on_a_terminal([*args, "--out", str(tmp_path / "tty"), "--json"], timeout=300)
    assert rc == 0
    assert "pretrain (PausePT)" in seen  # the bar, on the terminal
    got = json.loads(out)  # stdout: the result only
    assert got["steps"] == 4 and got["model"] == str((tmp_path / "tty" / "model").resolve()) and got["loss_last"] > 0

    piped = subprocess.run([*args, "--out", str(tmp_path / "pipe")], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and "PausePT" not in piped.stderr and "PausePT" not in piped.stdout
    assert piped.stdout.startswith("pretrained") and len(piped.stdout.strip().splitlines()) == 1
    assert "Writing model shards" not in piped.stderr and "it/s]" not in piped.stderr, piped.stderr  # transformers' bars
    assert "Removed shared tensor" not in piped.stderr, piped.stderr  # accelerate's note on tied weights, every save


def test_ctrl_c_in_reproduce_leaves_finished_results_and_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    from tenfold.report.registry import REGISTRY, experiment, load_all

    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path / "home"))
    load_all()
    calls = {"first": 0, "second": 0}
    interrupt = {"now": True}

    @experiment("test-first", "ndp", "runs", {})
    def _first(run):
        calls["first"] += 1
        return {"ours": {}, "checks": [Check("x", exact(1.0))], "why": "ok"}

    @experiment("test-second", "ndp", "is interrupted", {})
    def _second(run):
        calls["second"] += 1
        if interrupt["now"]:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second experiment
        return {"ours": {}, "checks": [Check("x", exact(1.0))], "why": "ok"}

    try:
        out = tmp_path / "report"
        assert main(["reproduce", "test-first", "test-second", "--out", str(out), "--profile", "smoke"]) == 130
        assert capsys.readouterr().err.strip().splitlines()[-1] == "tenfold: interrupted"
        assert (out / "results" / "test-first.json").exists() and not (out / "results" / "test-second.json").exists()
        interrupt["now"] = False
        assert main(["reproduce", "test-first", "test-second", "--out", str(out), "--profile", "smoke"]) == 0
        assert calls == {"first": 1, "second": 2}  # the finished experiment was kept, the interrupted one re-ran
        assert "Kept 1 unchanged result(s) (test-first)" in capsys.readouterr().out
    finally:
        REGISTRY.pop("test-first")
        REGISTRY.pop("test-second")


def test_doctor_says_what_is_in_place_and_what_to_fix(tmp_path, capsys, monkeypatch):
    assert main(["doctor", "--json"]) == 0, capsys.readouterr().err
    got = json.loads(capsys.readouterr().out)
    assert got["problems"] == [] and got["model"]["converted"] and all(got["corpora"].values())
    assert got["libraries"]["torch"] and got["tenfold"]["version"] and "isolation" in got["sandbox"]
    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path / "fresh"))  # a fresh machine: nothing prepared yet
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "problem: the bundled model is not converted yet: `tenfold data prepare`" in out
    assert "corpora not fetched yet: austen, calendar, fortunes-zh" in out


@pytest.mark.parametrize("args", [
    ["reproduce", "streaming-memory", "--profile", "smoke"],
    ["probes", "plot", "--dataset", "world-places"],
    ["pause", "pretrain", "--steps", "1"],
    ["radit", "data"],
    ["vision", "world", "--n", "2"],
    ["lmm", "suite"],
    ["stop", "improve", "--iterations", "1"],
], ids=lambda a: " ".join(a[:2]))
def test_out_under_a_file_or_naming_one_is_one_line(tmp_path, args):
    """An --out whose parent is a file (or, for verbs that make the folder, that is a file) is one line, not an
    OSError traceback from mkdir, and before the verb's work."""
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    _one_line_error(run_cli(*args, "--out", str(existing / "sub")), "file.txt")
    assert existing.read_text() == "keep me"


def test_an_os_error_on_a_path_is_one_line(tmp_path):
    """A path the system refuses at write time (here a plot under a file) is one line naming it, not a traceback."""
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    _one_line_error(run_cli("rag", "index", str(existing), "--out", str(existing / "idx")), "file.txt")


def test_report_on_a_folder_without_results_is_one_line_and_writes_nothing(tmp_path):
    """``tenfold report .`` (or ``report ""``) in a folder that is not a report used to write an empty index.html
    there and exit 0."""
    _one_line_error(run_cli("report", str(tmp_path)), "no results")
    _one_line_error(run_cli("report", ""), "empty")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_model_is_one_whole_line(tmp_path):
    """A config.json of an unknown model type and no tokenizer: transformers' warning stayed on stderr beside the
    error, and the error was cut at its first line ("... from one of: ")."""
    (tmp_path / "config.json").write_text('{"model_type": "nonsense"}')
    res = run_cli("generate", "hi", "--model", str(tmp_path))
    _one_line_error(res, "cannot load model")
    assert not res.stderr.strip().endswith(":"), res.stderr
