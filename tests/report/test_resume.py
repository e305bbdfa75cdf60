"""``tenfold reproduce`` keeps what has not changed: a second run skips everything and rebuilds the report in seconds;
a change re-runs only the experiments it can affect; an interrupted run resumes; the ETA comes from earlier runs."""
import json
import time

import pytest

from tenfold import provenance
from tenfold.report import REGISTRY, experiment, run_experiments
from tenfold.report import fingerprint as fp
from tenfold.report.runner import Plan
from tenfold.report.verdict import Check, exact

CALLS: dict[str, int] = {}


@pytest.fixture
def two_experiments(tmp_path, monkeypatch):
    """Two tiny experiments that pose as the ndp and probes experiments (their code is what they can reach; the ndp one
    reads a corpus file), and one that loads a 'model' from a weight file."""
    from tenfold.data import read_text

    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path / "home"))
    CALLS.clear()
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"v1")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("first edition")

    def make(name, module):
        @experiment(name, "ndp", f"{name} works", {})
        def fn(run):
            CALLS[name] = CALLS.get(name, 0) + 1
            run.settings["profile"] = run.profile
            if name == "t-model":
                provenance.note_model("tiny", weights)
            if name == "t-ndp":
                read_text(corpus)
            return {"ours": {"calls": CALLS[name]}, "checks": [Check("x", exact(1.0))], "why": "ok"}

        fn.__module__ = module
        return REGISTRY.pop(name)

    exps = [make("t-ndp", "tenfold.ndp.experiment"), make("t-probes", "tenfold.probes.experiment"),
            make("t-model", "tenfold.vision.experiment")]
    return exps, weights


def _run(exps, out, **kw):
    return run_experiments(exps, "smoke", str(out), show_progress=False, **kw)


def test_a_second_run_keeps_everything_and_rebuilds_the_report(tmp_path, two_experiments):
    exps, _ = two_experiments
    out = tmp_path / "report"
    first = _run(exps, out)
    assert CALLS == {"t-ndp": 1, "t-probes": 1, "t-model": 1} and not any(r.get("kept") for r in first)
    (out / "index.html").unlink()
    t0 = time.perf_counter()
    second = _run(exps, out)
    assert time.perf_counter() - t0 < 10
    assert CALLS == {"t-ndp": 1, "t-probes": 1, "t-model": 1}  # nothing ran again
    assert all(r["kept"] for r in second) and [r["ours"] for r in second] == [r["ours"] for r in first]
    assert "t-ndp" in (out / "index.html").read_text()  # the report was rebuilt from the kept results
    _run(exps, out, force=True)
    assert CALLS == {"t-ndp": 2, "t-probes": 2, "t-model": 2}


def test_only_what_a_change_can_affect_runs_again(tmp_path, two_experiments, monkeypatch):
    exps, weights = two_experiments
    out = tmp_path / "report"
    _run(exps, out)
    # an edit in tenfold/ndp: only the experiment whose code reaches it runs again
    real = fp.code_hash
    monkeypatch.setattr(fp, "code_hash", lambda modules: real(modules) + ("+edit" if "tenfold.ndp.growth" in modules
                                                                         else ""))
    _run(exps, out)
    assert CALLS == {"t-ndp": 2, "t-probes": 1, "t-model": 1}
    # another profile is another result
    run_experiments(exps[1:2], "quick", str(out), show_progress=False)
    assert CALLS["t-probes"] == 2
    # new weights in the file the model was loaded from: that experiment runs again
    _run(exps, out)  # back to smoke for t-probes
    weights.write_bytes(b"v2, retrained")
    _run(exps, out)
    assert CALLS == {"t-ndp": 2, "t-probes": 3, "t-model": 2}
    # a corpus file the experiment read changed: it runs again (its record names the file and its hash)
    record = json.loads((out / "results" / "t-ndp.json").read_text())
    assert [f["file"] for f in record["env"]["inputs"]] == [str((tmp_path / "corpus.txt").resolve())]
    (tmp_path / "corpus.txt").write_text("second edition, revised")
    _run(exps, out)
    assert CALLS == {"t-ndp": 3, "t-probes": 3, "t-model": 2}


def test_an_interrupted_or_failed_run_resumes_with_what_is_missing(tmp_path, two_experiments):
    exps, _ = two_experiments
    out = tmp_path / "report"
    _run(exps, out)
    (out / "results" / "t-probes.json").unlink()  # stopped before t-probes was written
    record = json.loads((out / "results" / "t-ndp.json").read_text())
    (out / "results" / "t-ndp.json").write_text(json.dumps({**record, "status": "failed", "verdict": "failed"}))
    _run(exps, out)
    assert CALLS == {"t-ndp": 2, "t-probes": 2, "t-model": 1}


def test_reachable_code_follows_imports_and_lazy_exports():
    ndp = fp.reachable("tenfold.ndp.experiment")
    assert "tenfold.ndp.growth" in ndp and not any(m.startswith("tenfold.streaming") for m in ndp)
    radit = fp.reachable("tenfold.radit.experiment")
    assert "tenfold.retrieval.embedder" in radit  # through tenfold.retrieval's lazy exports
    serve = fp.reachable("tenfold.serve.experiment")
    assert "tenfold.serve.cli" in serve  # its own package whole: serve-load runs `tenfold serve` in a subprocess
    assert not any(m.startswith(fp.NOT_COMPUTING) for m in serve)


def test_the_eta_comes_from_earlier_runtimes(tmp_path, two_experiments):
    exps, _ = two_experiments
    assert Plan(["a", "b"], {}).eta() == "ETA unknown (first run)"
    _run(exps, tmp_path / "report")
    expected = fp.expected_runtimes("smoke")
    assert set(expected) == {"t-ndp", "t-probes", "t-model"}
    plan = Plan(["a", "b", "c"], {"a": 100.0, "b": 200.0})
    assert plan.eta() == "ETA >= 5 min (+1 never timed)"
    plan.start(1)
    assert plan.left_s() == (pytest.approx(200.0, abs=1), 1)
    plan = Plan(["a", "b"], {"a": 30.0, "b": 20.0})
    assert plan.eta() == "ETA ~50 s"


def test_off_a_terminal_progress_is_one_line_per_experiment_on_stderr(tmp_path, two_experiments, capsys):
    """A log file or CI console gets no live bar: each experiment says when it starts (with the ETA) and how it
    ended, on stderr; stdout stays clean. A second run names what it kept."""
    exps, _ = two_experiments
    out = tmp_path / "report"
    run_experiments(exps, "smoke", str(out), show_progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    heads = [f"reproduce [{i}/3] {name}" for i, name in enumerate(("t-ndp", "t-probes", "t-model"), 1) for _ in "12"]
    assert [line.split(":")[0] for line in lines] == heads  # a start line and an end line each
    assert lines[0] == "reproduce [1/3] t-ndp: running, ETA unknown (first run)"
    assert lines[1].startswith("reproduce [1/3] t-ndp: ok, reproduced in ")
    run_experiments(exps, "smoke", str(out), show_progress=True)
    assert "reproduce: 3 unchanged result(s) kept: t-ndp, t-probes, t-model" in capsys.readouterr().err


def test_library_warnings_go_into_the_result_not_the_console(tmp_path, monkeypatch, capsys):
    import warnings

    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path / "home"))

    @experiment("t-warns", "ndp", "warns", {})
    def fn(run):
        for _ in range(3):
            warnings.warn("old API", FutureWarning)
        return {"ours": {}, "checks": [Check("x", exact(1.0))], "why": "ok"}

    exp = REGISTRY.pop("t-warns")
    [rec] = run_experiments([exp], "smoke", str(tmp_path / "r"), show_progress=True)
    assert rec["warnings"] == ["FutureWarning: old API"]
    err = capsys.readouterr().err
    assert "old API" not in err and "t-warns: ok, reproduced in 0 s (1 warning(s) in its result file)" in err
    assert json.loads((tmp_path / "r" / "results" / "t-warns.json").read_text())["warnings"] == ["FutureWarning: old API"]
    html = (tmp_path / "r" / "index.html").read_text()
    assert "Warnings raised during the run (1)" in html and "FutureWarning: old API" in html


def test_another_device_is_another_result(tmp_path, two_experiments, monkeypatch):
    """The device the models run on decides the numbers: a result made on the CPU does not stand for a run on a GPU
    (`reproduce --device cuda`). No GPU here, so the resolved device is stood in for."""
    import tenfold.devices

    exps, _ = two_experiments
    out = tmp_path / "report"
    _run(exps[:1], out)
    assert fp.fingerprint(exps[0], "smoke")["device"] == "cpu"
    _run(exps[:1], out)
    assert CALLS["t-ndp"] == 1
    monkeypatch.setattr(tenfold.devices, "resolve_device", lambda name=None: "cuda:0")
    _run(exps[:1], out)
    assert CALLS["t-ndp"] == 2
