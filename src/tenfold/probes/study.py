"""One dataset, one model, one prompt: extract, probe every layer, run the baselines, find neurons."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tenfold.probes.activations import cached_extract, random_init_like
from tenfold.probes.datasets import EntityDataset
from tenfold.probes.fit import best, best_neurons, fit_layers, summary
from tenfold.errors import TenfoldError


@dataclass
class Study:
    dataset: EntityDataset
    prompt: str
    layers: list[dict]  # per-layer scores and held-out predictions
    shuffled: dict  # best layer's probe on shuffled train targets (scores + held-out predictions)
    random_init: list[dict] | None  # per-layer scores on a randomly initialised model
    neurons: list[dict]

    @property
    def best(self) -> dict:
        return best(self.layers)

    def metrics(self) -> dict:
        b = self.best
        out = {"entities": len(self.dataset), "test": int(self.dataset.is_test.sum()), "prompt": self.prompt,
               "best_layer": b["layer"], "r2": b["r2"], "spearman": b["spearman"],
               "proximity_error": b["proximity_error"], "layer0_r2": self.layers[0]["r2"],
               "baseline_r2": self.shuffled["r2"],
               "random_init_best_r2": None if self.random_init is None else best(self.random_init)["r2"],
               "best_neuron": max(self.neurons, key=lambda n: n["test_r2"]) if self.neurons else None}
        for key in ("median_km", "mean_abs_years"):
            if key in b:
                out[key] = b[key]
        return out

    def as_dict(self) -> dict:
        return {**self.metrics(), "layers": summary(self.layers),
                "random_init_layers": None if self.random_init is None else summary(self.random_init),
                "neurons": self.neurons}


def run_study(model, tokenizer, dataset: EntityDataset, prompt: str = "bare", random_baseline: bool = True,
              progress=None) -> Study:
    if prompt not in dataset.prompts:
        raise TenfoldError(f"dataset {dataset.name!r} has no prompt {prompt!r}; choose one of: {', '.join(dataset.prompts)}")
    template = dataset.prompts[prompt]
    tick = progress or (lambda what, done, total: None)
    acts = cached_extract(model, tokenizer, dataset.name, prompt, template, dataset.entities,
                          progress=lambda d, t: tick("extract", d, t))
    is_test = dataset.is_test
    layers = fit_layers(acts, dataset.targets, is_test, dataset.kind, progress=lambda d, t: tick("fit", d, t))
    top = best(layers)["layer"]
    shuffled = fit_layers(acts[:, top : top + 1], dataset.targets, is_test, dataset.kind, shuffle_seed=0)[0]
    neurons = best_neurons(acts[:, top], dataset.targets, is_test)
    rand_rows = None
    if random_baseline:
        rand = random_init_like(model)
        rand_acts = cached_extract(rand, tokenizer, dataset.name, prompt, template, dataset.entities,
                                   progress=lambda d, t: tick("extract (random init)", d, t))
        rand_rows = fit_layers(rand_acts, dataset.targets, is_test, dataset.kind)
        del rand
    return Study(dataset, prompt, layers, shuffled, rand_rows, neurons)


def layer_r2(rows: list[dict] | None) -> list[float]:
    return [] if rows is None else [float(r["r2"]) for r in rows]


def held_out_predictions(study: Study) -> tuple[np.ndarray, np.ndarray, list[str]]:
    test = study.dataset.is_test
    labels = [lab for lab, t in zip(study.dataset.labels, test) if t]
    return study.dataset.targets[test], study.best["prediction"], labels
