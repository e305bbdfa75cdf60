import json

from tenfold.report import PAPERS, REGISTRY, build_report, experiment, run_experiments
from tenfold.report.verdict import Check, exact, proportion, spread


def _register():
    @experiment("tiny-demo", paper="streamingllm", claim="a line goes up",
                paper_numbers={"slope": 1.0})
    def tiny(run):
        import matplotlib.pyplot as plt

        run.settings["points"] = run.pick(3, 10, 100)
        fig, ax = plt.subplots()
        ax.plot(range(run.settings["points"]))
        run.save_plot(fig, "line")
        checks = [Check("slope above zero", proportion(27, 30), threshold=0.5),
                  Check("slope reaches the paper's", spread([0.8, 1.3]), smallest=1.0),
                  Check("from one seed", spread([2.0]))]
        return {"ours": {"slope": 1.0, "nan_value": float("nan")}, "checks": checks, "why": "slope 1"}

    @experiment("tiny-broken", paper="ndp", claim="raises", paper_numbers={})
    def broken(run):
        raise RuntimeError("boom")

    return [REGISTRY.pop("tiny-demo"), REGISTRY.pop("tiny-broken")]


def test_tiny_experiment_gives_json_png_and_html(tmp_path):
    exps = _register()
    records = run_experiments(exps, "smoke", str(tmp_path), show_progress=False)
    assert [r["status"] for r in records] == ["ok", "failed"]
    rec = json.loads((tmp_path / "results" / "tiny-demo.json").read_text())
    for key in ("paper", "claim", "paper_numbers", "ours", "settings", "verdict", "runtime_s"):
        assert key in rec
    assert rec["settings"]["points"] == 3 and rec["ours"]["nan_value"] is None
    png = tmp_path / "results" / rec["plots"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    failed = json.loads((tmp_path / "results" / "tiny-broken.json").read_text())
    assert failed["verdict"] == "failed" and "boom" in failed["error"]
    html = (tmp_path / "index.html").read_text()
    assert len(PAPERS) == 10
    for paper in PAPERS:
        assert paper["title"] in html
    assert "data:image/png;base64," in html and "http://" not in html.split("<body>")[0]
    # issue 42: each part of the claim with its n, interval, method and status, the rule, and what would decide it
    assert rec["verdict"] == "partly" and [c["status"] for c in rec["checks"]] == ["shown", "undecided", "undecided"]
    block = html.split("<div class='exp' id='tiny-demo'>")[1].split("<div class='exp'")[0]
    assert "badge partly" in block and "<table class='checks'>" in block and "How the verdict follows" in block
    assert "30 problems" in block and "Wilson" in block and "[0.7438, 0.9654]" in block
    assert "<td>none</td>" in block and "to decide: more seeds (no interval: one repeat; at least 2 give one)" in block
    # the two tiny experiments fill two papers; the other eight say "not implemented" or "not run"
    assert html.count("No experiment yet") + html.count("Not run for this report") == 8


def test_report_rebuilds_from_json_and_survives_a_corrupt_file(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bad.json").write_text("{not json")
    index = build_report(tmp_path)
    assert "unreadable result file" in index.read_text()


def test_score_matrices_render_as_tables_with_headers(tmp_path):
    """{split: {method: {metric: value}}} shows one small table per split, metrics as column headers; ragged or
    deeper values keep the one-line form."""
    (tmp_path / "results").mkdir()
    ours = {"test": {"ours": {"colour": 0.25, "shape": 0.5}, "baseline": {"colour": 0.125, "shape": 0.0}},
            "deep": {"a": {"x": {"y": 1}}, "b": {"x": {"y": 2}}},
            "series": {str(i): i / 3 for i in range(20)}}
    rec = {"name": "m-demo", "paper": "kosmos-g", "claim": "c", "paper_numbers": {}, "ours": ours,
           "settings": {}, "verdict": "partly", "why": "w", "status": "ok", "runtime_s": 1.0, "plots": []}
    (tmp_path / "results" / "m-demo.json").write_text(json.dumps(rec))
    html = build_report(tmp_path).read_text()
    assert "<table class='matrix'><tr><th></th><th>colour</th><th>shape</th></tr>" in html
    assert "<tr><td>baseline</td><td>0.125</td><td>0</td></tr>" in html
    assert html.count("class='matrix'") == 1  # "deep" nests too far: not a matrix
    assert "{0: 0, 1: 0.3333, 2: 0.6667" in html and ", ... (20)}" in html


def test_text_from_result_files_cannot_inject_markup(tmp_path):
    """The page is a jinja2 template with autoescaping: a result's claim, verdict text, keys, values, plot names
    and error text are shown as text, never as markup."""
    (tmp_path / "results").mkdir()
    evil = "<script>alert(1)</script>"
    rec = {"name": "x<y", "paper": "stop", "claim": evil, "paper_numbers": {evil: 1}, "ours": {"k": evil},
           "settings": {"s": evil}, "verdict": "partly", "why": evil, "status": "failed", "traceback": evil,
           "runtime_s": 1.0, "plots": ["a'><script>.png", "../../outside.png"]}
    (tmp_path.parent / "outside.png").write_bytes(b"\x89PNG secret")
    (tmp_path / "results" / "x.json").write_text(json.dumps(rec))
    html = build_report(tmp_path).read_text()
    assert "<script>" not in html and html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
    assert "<div class='exp' id='x&lt;y'>" in html and "plot a&#39;&gt;&lt;script&gt;.png missing" in html
    assert "plot ../../outside.png missing" in html  # nothing outside results/ is embedded


def test_a_setting_cut_only_to_fit_the_quick_profile_is_said_in_the_report(tmp_path, monkeypatch):
    """`Run.pick(..., shrunk=NAME)`: the quick profile records what it runs smaller than the full one, and the
    report prints it beside the verdict; smoke and full runs record nothing."""
    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path / "home"))

    @experiment("tiny-scaled", paper="ndp", claim="scales", paper_numbers={})
    def scaled(run):
        run.settings["seeds"] = run.pick([0], [0, 1], [0, 1, 2, 3, 4], shrunk="seeds")
        run.settings["steps"] = run.pick(2, 100, 100, shrunk="steps")  # the same as full: nothing to say
        return {"ours": {}, "checks": [Check("x", exact(1.0)), Check("y", exact(0.0))], "why": "ok"}

    exp = REGISTRY.pop("tiny-scaled")
    [quick] = run_experiments([exp], "quick", str(tmp_path / "q"), show_progress=False)
    assert quick["scaled_down"] == ["seeds: 0, 1 (full profile: 0, 1, 2, 3, 4)"]
    html = (tmp_path / "q" / "index.html").read_text()
    assert "Scaled down</b> in the quick profile" in html and "seeds: 0, 1 (full profile: 0, 1, 2, 3, 4)" in html
    assert "tenfold reproduce tiny-scaled --profile full" in html
    [smoke] = run_experiments([exp], "smoke", str(tmp_path / "s"), show_progress=False)
    assert smoke["scaled_down"] == [] and "Scaled down" not in (tmp_path / "s" / "index.html").read_text()


def test_the_kept_full_profile_verdict_stands_beside_a_fresh_quick_one(tmp_path):
    """issue 42: an experiment run at the quick profile shows the full-profile verdict kept in the repository
    (docs/full-profile) beside its own; the kept folder's own report does not repeat it."""
    from tenfold.report.html import kept_full_profile_dir
    from tenfold.report.runner import write_json

    kept_dir = kept_full_profile_dir()
    assert kept_dir is not None  # this test runs from the source tree
    kept = json.loads((kept_dir / "results" / "streaming-ppl.json").read_text())
    (tmp_path / "results").mkdir()
    rec = {"name": "streaming-ppl", "paper": "streamingllm", "claim": "c", "paper_numbers": {}, "ours": {},
           "settings": {}, "verdict": "inconclusive", "why": "quick", "status": "ok", "runtime_s": 1.0, "plots": [],
           "profile": "quick", "checks": [Check("x", spread([1.0])).record()], "rule": "r"}
    write_json(tmp_path / "results" / "streaming-ppl.json", rec)  # infinite bounds stored as null
    html = build_report(tmp_path).read_text()
    block = html.split("<div class='exp' id='streaming-ppl'>")[1]
    assert "<div class='fullrun'><b>Full profile</b>" in block and "badge no-intervals" in block
    assert f"rule of its time: {kept['verdict']}, with no intervals recorded" in block  # kept from before the rule
    assert f"{kept['runtime_s'] / 60:.0f} min of wall time" in block
    assert "Full profile (kept)</th>" in html
    assert "class='fullrun'" not in build_report(tmp_path, full_profile=None).read_text()
    rec["profile"] = "full"  # a full-profile result is not shown beside itself
    write_json(tmp_path / "results" / "streaming-ppl.json", rec)  # infinite bounds stored as null
    assert "class='fullrun'" not in build_report(tmp_path).read_text()


def test_the_report_derives_each_verdict_from_the_stored_checks_not_from_the_file(tmp_path):
    """issue 42: a result file's own verdict and statuses are not taken: the report re-applies the rule to the stored
    estimates (so an edited file cannot promote itself, and results kept from an earlier rule are read by today's);
    checks it cannot read make a failed record that says so."""
    from tenfold.report.html import load_records
    from tenfold.report.runner import write_json
    from tenfold.report.verdict import unmeasured

    (tmp_path / "results").mkdir()
    base = {"paper": "streamingllm", "claim": "c", "paper_numbers": {}, "ours": {}, "settings": {}, "why": "w",
            "status": "ok", "runtime_s": 1.0, "plots": [], "profile": "quick"}
    forged = [Check("one seed", spread([3.0])).record(), Check("missing", unmeasured("no llama.cpp")).record()]
    for c in forged:
        c["status"] = "shown"  # edited by hand
    write_json(tmp_path / "results" / "forged.json", {**base, "name": "forged", "verdict": "reproduced",
                                                      "checks": forged})
    write_json(tmp_path / "results" / "broken.json", {**base, "name": "broken", "verdict": "reproduced",
                                                      "checks": [{"name": "x", "effect": {"value": "high"}}]})
    by = {r["name"]: r for r in load_records(tmp_path)}
    assert by["forged"]["verdict"] == "inconclusive" and {c["status"] for c in by["forged"]["checks"]} == {"undecided"}
    assert by["broken"]["verdict"] == "failed" and "unreadable checks in broken.json" in by["broken"]["why"]
    html = build_report(tmp_path).read_text()
    block = html.split("<div class='exp' id='forged'>")[1].split("<div class='exp'")[0]
    assert "badge inconclusive" in block and "<td>not measured</td>" in block and "<td>none</td>" in block
