"""``probes``: linear maps of space and time in the bundled model (Gurnee & Tegmark, Fig. 1-2, Tables 1-2)."""
from __future__ import annotations

from tenfold.report import experiment

PAPER = {"Llama-2-7B held-out R^2 (World / USA / NYC / History / Art / Headlines)": [0.881, 0.799, 0.219, 0.785, 0.788, 0.564],
         "Llama-2-70B": [0.911, 0.864, 0.359, 0.835, 0.885, 0.746],
         "claim": "linear, robust to prompts, peak in the middle layers, single space/time neurons exist"}


@experiment(
    "probes", paper="space-time-probes",
    claim="A linear probe on an LM's residual stream at an entity's last token recovers where places are and "
          "when things happened, far better than from the token embeddings alone or from a random model of the "
          "same architecture (Gurnee & Tegmark).",
    paper_numbers=PAPER)
def probes(run):
    from tenfold.models import load_lm
    from tenfold.probes import plots
    from tenfold.probes.datasets import load_dataset
    from tenfold.probes.study import held_out_predictions, layer_r2, run_study

    limits = run.pick({"world-places": 300, "us-places": 200, "films": 300, "historical-figures": 200, "history-events": 200},
                      {"world-places": 800, "us-places": 500, "films": 500, "historical-figures": 500,
                       "history-events": 500},
                      {"world-places": None, "us-places": None, "films": None, "historical-figures": None,
                       "history-events": None}, shrunk="entities per dataset (None: all)")
    robustness = run.pick(["world-places"], ["world-places"], ["world-places", "us-places", "films",
                                                                         "historical-figures", "history-events"])
    model, tok = load_lm(quantize=None)
    run.settings.update(model="SmolLM2-135M-Instruct (30 layers, 576 dims)", limits=limits, split="20% held out (hash)",
                        probe="StandardScaler + RidgeCV, alphas 1e-1..1e5", prompts_checked=robustness)
    studies, ours = {}, {}
    for name, limit in limits.items():
        run.progress(f"{name}: extract and probe")
        studies[name] = run_study(model, tok, load_dataset(name, limit))
        ours[name] = studies[name].metrics()
    prompts = {}
    for name in robustness:
        data = load_dataset(name, limits[name])
        other = next(p for p in data.prompts if p != "bare")
        run.progress(f"{name}: prompt {other!r}")
        alt = run_study(model, tok, data, other, random_baseline=False).metrics()
        prompts[name] = {"bare": ours[name]["r2"], other: alt["r2"], f"{other}_best_layer": alt["best_layer"]}
    ours["prompt_robustness"] = prompts
    run.save_plot(plots.r2_by_layer({n: layer_r2(s.layers) for n, s in studies.items()},
                                    {n: layer_r2(s.random_init) for n, s in studies.items()}), "r2-by-layer")
    true, pred, labels = held_out_predictions(studies["world-places"])
    run.save_plot(plots.world_map(true, pred, labels, f"world-places, layer {ours['world-places']['best_layer']}"),
                  "world-map")
    true, pred, _ = held_out_predictions(studies["films"])
    run.save_plot(plots.years(true[:, 0], pred[:, 0], f"films, layer {ours['films']['best_layer']}"), "film-years")
    checks = probe_checks(studies)
    for name, study in studies.items():  # the headline R^2 with its interval over held-out entities
        true = study.dataset.targets[study.dataset.is_test]
        for key, prediction in (("r2_ci95", study.best["prediction"]), ("baseline_r2_ci95", study.shuffled["prediction"])):
            e = r2_estimate(true, prediction)
            ours[name][key] = [round(e.low, 4), round(e.high, 4)]
    layers = sorted(m["best_layer"] for n, m in ours.items() if n in studies)
    why = (f"best-layer R^2 on held-out entities (world {ours['world-places']['r2']:.2f} vs Llama-2-7B's 0.88); best "
           f"layers {layers} of 30 (the paper: middle layers). ") + "; ".join(
        f"{n} R^2 {m['r2']:.2f} (n={m['test']} held out; layer {m['best_layer']}; embeddings {m['layer0_r2']:.2f}, "
        f"random model {m['random_init_best_r2']:.2f}, shuffled targets {m['baseline_r2']:.2f})"
        for n, m in ours.items() if n in studies)
    ours["note"] = ("a 135M model against Llama-2 7B-70B, and different entity lists: the comparison shows whether the "
                    "structure is there and where it peaks, not whether the size of the effect matches")
    return {"ours": ours, "checks": checks, "why": why}


# "far better" than the embeddings or a random model: at least 0.1 R^2 (the margin the claim was checked with before
# issue 42).
FAR_BETTER = 0.1
# The size of the effect: Llama-2-7B's held-out world R^2 is 0.881 (Gurnee & Tegmark, Table 1); "comparable" is 80%.
WORLD_R2 = 0.8 * 0.881


def r2(true, pred) -> float:
    """R^2 of ``pred`` against ``true`` ((N, d) arrays), the mean over the d coordinates (as
    :func:`tenfold.probes.fit.score` computes it with scikit-learn)."""
    import numpy as np

    true, pred = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    res = ((true - pred) ** 2).sum(0)
    tot = ((true - true.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - res / tot))


def r2_estimate(true, pred, minus=None):
    """The held-out R^2 of ``pred`` (minus that of ``minus``, a second probe's predictions for the same entities)
    with a paired percentile bootstrap over the held-out entities (:func:`tenfold.report.verdict.bootstrap`).

    The probes stay fixed (fit once on the train split); the interval is the test sample's uncertainty."""
    import numpy as np

    from tenfold.report.verdict import bootstrap

    true = np.asarray(true, dtype=float)
    d = true.shape[1]
    sets = [true, np.asarray(pred, dtype=float)] + ([] if minus is None else [np.asarray(minus, dtype=float)])
    columns = [s[:, j] for s in sets for j in range(d)]

    def statistic(*cols):
        t, p = np.stack(cols[:d], 1), np.stack(cols[d:2 * d], 1)
        return r2(t, p) - (r2(t, np.stack(cols[2 * d:], 1)) if minus is not None else 0.0)

    return bootstrap(statistic, *columns, unit="held-out entities",
                     method="bootstrap" if minus is None else "bootstrap, paired")


def probe_checks(studies: dict) -> list:
    """Per dataset, the claim's parts on the held-out entities (paired bootstrap of R^2, :func:`r2_estimate`):

    - the best layer's probe beats the token embeddings (layer 0): R^2 difference > 0, meant to be at least
      :data:`FAR_BETTER`;
    - it beats a randomly initialised model of the same architecture (its best layer): the same.

    The shuffled-target control is reported beside them (``baseline_r2``), not checked: it is no part of the claim,
    and a control that holds would count as a part shown.

    And the size of the effect on world places: R^2 above :data:`WORLD_R2` (80% of Llama-2-7B's 0.881). A comparison
    is at chance when neither probe is shown to beat predicting the mean (both R^2 intervals reach 0): the model
    holds no linear map there for the other probe to fall short of. The best layer is the one with the highest
    held-out R^2 (for the random model too), as the paper reports it.
    """
    from tenfold.probes.fit import best
    from tenfold.report.verdict import Check

    checks = []
    for name, study in studies.items():
        true = study.dataset.targets[study.dataset.is_test]
        top = study.best
        top_at_chance = r2_estimate(true, top["prediction"]).low <= 0
        rivals = [("embeddings (layer 0)", study.layers[0])]
        if study.random_init is not None:
            rivals.append(("a random model's best layer", best(study.random_init)))
        for label, rival in rivals:
            at_chance = top_at_chance and r2_estimate(true, rival["prediction"]).low <= 0
            checks.append(Check(f"{name}: best layer R^2 minus {label}", r2_estimate(true, top["prediction"],
                                                                                    rival["prediction"]),
                                threshold=0.0, smallest=FAR_BETTER, at_chance=at_chance))
    world = studies["world-places"]
    checks.append(Check("world-places: best layer R^2 (size of the effect)",
                        r2_estimate(world.dataset.targets[world.dataset.is_test], world.best["prediction"]),
                        threshold=WORLD_R2))
    return checks
