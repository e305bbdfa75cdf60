import json

import pytest

from tenfold.report import load_all, run_experiments, select


@pytest.mark.slow
def test_smoke_profile_runs_every_registered_experiment(tmp_path):
    names = sorted(load_all())
    assert {"streaming-ppl", "streaming-sinks", "streaming-speed", "streaming-memory"} <= set(names)
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
    assert "streaming-ppl" in html and html.count("No experiment yet") == 9
