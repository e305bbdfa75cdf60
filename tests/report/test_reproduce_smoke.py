import json

import pytest

from tenfold.report import load_all, run_experiments, select


@pytest.mark.slow
def test_smoke_profile_runs_every_registered_experiment(tmp_path):
    names = sorted(load_all())
    assert {"streaming-ppl", "streaming-sinks", "streaming-speed", "streaming-memory", "serve-load", "probes",
            "retrieval-long-context"} <= set(names)
    records = run_experiments(select(None), "smoke", str(tmp_path), show_progress=False)
    for rec in records:
        assert rec["status"] == "ok", rec.get("traceback")
        assert rec["verdict"] in ("reproduced", "partly", "not reproduced") and rec["plots"]
    ppl = json.loads((tmp_path / "results" / "streaming-ppl.json").read_text())
    for key in ("ppl_sink", "ppl_window", "ppl_recompute"):
        assert ppl["ours"][key] > 1
    speed = json.loads((tmp_path / "results" / "streaming-speed.json").read_text())
    assert speed["ours"]["speedup_vs_recompute"]
    sinks = json.loads((tmp_path / "results" / "streaming-sinks.json").read_text())
    assert set(sinks["ours"]["ppl_by_sinks"]) == {"0", "1", "2", "4", "8"}
    html = (tmp_path / "index.html").read_text()
    papers_with_experiments = {rec["paper"] for rec in records}
    assert "streaming-ppl" in html and html.count("No experiment yet") == 10 - len(papers_with_experiments) == 0
    probes = json.loads((tmp_path / "results" / "probes.json").read_text())
    assert {"best_layer", "r2", "layer0_r2", "baseline_r2"} <= set(probes["ours"]["world-places"])
    rag = json.loads((tmp_path / "results" / "retrieval-long-context.json").read_text())
    assert set(rag["ours"]["grid"]) == {"long", "retrieve", "both"}
    serve = json.loads((tmp_path / "results" / "serve-load.json").read_text())
    assert serve["ours"]["stateless_vs_session_at_last_turn"] > 0 and set(serve["ours"]["load"]) == {"1", "4"}
    retention = serve["ours"]["system_prompt_retention"]
    assert {"keep_system", "sinks_only"} <= set(retention)
    assert 0 <= retention["keep_system"]["french_share_last_turns"] <= 1
    pause = json.loads((tmp_path / "results" / "pause.json").read_text())
    assert set(pause["ours"]["accuracy"]) == {"StdPT+StdFT", "StdPT+PauseFT", "PausePT+StdFT", "PausePT+PauseFT"}
    assert "0" in pause["ours"]["m_inf_sweep (PausePT+PauseFT)"]["sort"]
    radit = json.loads((tmp_path / "results" / "radit.json").read_text())
    assert list(radit["ours"]["accuracy"]) == ["closed-book", "base + retrieval (concat)", "base + retrieval (REPLUG)",
                                               "+ LM-ft", "+ R-ft", "+ both (RA-DIT)"]
    assert 0 <= radit["ours"]["lsr_mass_on_gold_passage"] <= 1
    kosmos = json.loads((tmp_path / "results" / "kosmos-g.json").read_text())
    assert set(kosmos["ours"]["unseen (held-out subject pairs)"]) == {
        "Kosmos-G", "single subject", "text-only (no subjects)", "text (target caption)", "rendered target"}
    assert kosmos["ours"]["unseen (held-out subject pairs)"]["rendered target"]["exact"] == 1.0
    probing = json.loads((tmp_path / "results" / "lmm-probing.json").read_text())
    assert set(probing["ours"]["constrained: by pointer"]) == {"arrow", "box", "circle", "point", "crop", "marks",
                                                               "coordinates"}
