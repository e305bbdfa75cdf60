"""``lmm-probing``: the GPT-4V exploration's probes, quantified on the local VLM (Yang et al. 2023, Secs. 3-5).

A suite generated from the visual world (exact answers; categories captioning, attributes, counting, spatial,
scene text, referring, few-shot; every referring scene asked once per pointer type) is run on the small VLM three
ways: plainly, with constrained prompting, and with all three techniques (constrained + condition on good
performance + in-context examples). Accuracy per category and per pointer type is set beside chance: for a
referring question, naming the colour of a random object of the scene. The VLM is the cached one of
``vision-foundation --profile full`` when there is one, else the one of its quick recipe, stored by
``vision-foundation`` (or trained here once and stored the same way: :mod:`tenfold.vision.cache`); the report says
which.
"""
from __future__ import annotations

import time
from pathlib import Path

from tenfold.report import experiment

VARIANTS = {"plain": (), "constrained": ("constrained",),
            "all techniques": ("constrained", "good-performance", "few-shot")}


@experiment(
    "lmm-probing", paper="gpt4v-dawn",
    claim="Pointing at a region by drawing on the image (arrows, boxes, circles, points, crops, numbered marks) lets "
          "a vision-language model answer about that region, and prompting techniques (constrained answers, "
          "conditioning on good performance, in-context examples) raise its accuracy - here measured on a small "
          "VLM over a generated suite with exact answers.",
    paper_numbers={"GPT-4V (Yang et al. 2023)": "qualitative: visual referring prompts understood in the samples "
                                                "shown (Sec. 5); no accuracy reported",
                   "quantified elsewhere (ViP-Bench, Cai et al. 2023)": "GPT-4V 60.7 overall with visual prompts on "
                                                                         "synthesized images (for scale only: a "
                                                                         "different benchmark)"})
def lmm_probing(run):
    from tenfold.lmm.backends import LocalVLM
    from tenfold.lmm.gallery import summary, write_gallery
    from tenfold.lmm.runner import run_suite
    from tenfold.lmm.suite import load_suite
    from tenfold.lmm.world_suite import world_suite

    n, max_tokens = run.pick(1, 6, 30), run.pick(3, 16, 24)
    run.progress("the VLM")
    vlm, source = _vlm(run)
    out = Path(run.out_dir) / "lmm-probing"
    suite_path = world_suite(out / "suite", n=n, size=128, seed=0, force=True)  # a re-run replaces it
    suite = load_suite(suite_path)
    run.settings.update(suite=f"{n} samples per category from held-out scenes (128x128 px; referring: {n} scenes x "
                              f"7 pointer types); {len(suite.samples)} samples", vlm=source,
                        decoding=f"greedy, at most {max_tokens} new tokens; answers scored by each sample's rule")
    backend = LocalVLM(vlm, name="local-vlm")
    ours, tables, answers = {}, {}, {}
    t0 = time.perf_counter()
    for label, techniques in VARIANTS.items():
        run.progress(f"probing ({label})")
        results = run_suite(suite, suite_path.parent, backend, out / label.replace(" ", "-"), techniques,
                            max_tokens=max_tokens, concurrency=1)
        s = summary(results)
        tables[label], answers[label] = s, results
        ours[f"{label}: overall accuracy"] = s["accuracy"]
        ours[f"{label}: by category"] = {k: v["accuracy"] for k, v in s["by category"].items()}
        ours[f"{label}: by pointer"] = {k: v["accuracy"] for k, v in s["by pointer"].items()}
        write_gallery(suite, suite_path.parent, results, out / f"{label.replace(' ', '-')}.html",
                      f"lmm-probing ({label})")
    referring = [s for s in suite.samples if s.category == "referring"]
    chance = sum(1 / len(s.meta["scene"]["objects"]) for s in referring) / len(referring)
    ours["referring chance (a random object's colour)"] = round(chance, 3)
    ours["probing time (s)"] = round(time.perf_counter() - t0, 1)
    ours["galleries"] = ", ".join(f"lmm-probing/{k.replace(' ', '-')}.html" for k in VARIANTS)
    _plot(run, tables, chance)
    checks = probing_checks(suite.samples, answers)
    return {"ours": ours, "checks": checks, "why": _why(tables, checks, chance, len(referring), len(suite.samples))}


def _vlm(run):
    """(VLM, where it came from): vision-foundation's full-profile VLM, a cached quick one, or a new quick one."""
    import json

    import torch

    from tenfold import home
    from tenfold.vision.vlm import VisionLanguageModel

    full = Path(home()) / "vision" / "full-profile" / "vlm"
    if (full / "vlm.json").exists() and run.profile != "smoke":
        meta = json.loads((full / "run.json").read_text()) if (full / "run.json").exists() else {}
        return (VisionLanguageModel.load(full, lm_dtype=torch.bfloat16),
                f"vision-foundation's full-profile VLM ({meta.get('vlm_steps', '?')} steps, cached in {full})")
    from tenfold.vision.cache import VLMRecipe, cached_vlm

    recipe = run.pick(VLMRecipe(clip_steps=5, vlm_steps=2), VLMRecipe(), VLMRecipe())
    _, _, vlm, info = cached_vlm(recipe)
    return vlm, (f"a small VLM ({recipe.describe()}; vision-foundation's quick recipe), {info['source']} "
                 f"(training took {info['train_s']:.0f} s)")


VISUAL = ("arrow", "box", "circle", "point", "crop", "marks")  # pointers drawn on the image (not coordinates)
POINTER_VARIANT = "constrained"  # one-word answers: the fairest reading of the pointer questions, chosen before measuring


def probing_checks(samples: list, answers: dict) -> list:
    """The claim as checks on per-sample correctness (``answers``: variant -> results, in ``samples``' order):

    - visual pointers are understood: accuracy on referring questions with a drawn pointer (:data:`VISUAL`, with
      :data:`POINTER_VARIANT` prompts; Wilson over the questions) above chance, the mean over those questions of
      1 / the scene's objects (naming the colour of a random object);
    - each prompting technique raises accuracy: constrained minus plain, and all techniques minus plain, over the
      whole suite (Newcombe), > 0. At chance when neither variant answers anything right.
    """
    from tenfold.report.verdict import Check, accuracy_difference, proportion

    pointed = [i for i, s in enumerate(samples) if s.category == "referring" and s.pointer in VISUAL]
    chance = sum(1 / len(samples[i].meta["scene"]["objects"]) for i in pointed) / len(pointed)
    right = [bool(answers[POINTER_VARIANT][i].correct) for i in pointed]
    checks = [Check(f"referring with a drawn pointer ({POINTER_VARIANT} prompts): accuracy vs chance",
                    proportion(sum(right), len(right), "questions"), threshold=round(chance, 4))]
    plain = [bool(r.correct) for r in answers["plain"]]
    for label in ("constrained", "all techniques"):
        other = [bool(r.correct) for r in answers[label]]
        checks.append(Check(f"{label} minus plain prompts: accuracy over the suite",
                            accuracy_difference(other, plain, "samples"), threshold=0.0,
                            at_chance=not any(other) and not any(plain)))
    return checks


def _why(tables: dict, checks: list, chance: float, n_ref: int, n_all: int) -> str:
    ptr = tables[POINTER_VARIANT]["by pointer"]
    mean_visual = checks[0].effect
    return (f"visual pointers {mean_visual.value:.2f} ({POINTER_VARIANT} prompts, {mean_visual.n} questions) vs chance "
            f"{chance:.2f} and coordinates {ptr['coordinates']['accuracy']:.2f}; overall accuracy over {n_all} "
            f"samples: " + ", ".join(f"{label} {t['accuracy']:.2f}" for label, t in tables.items())
            + f" ({n_ref} referring questions)")


def _plot(run, tables: dict, chance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    for ax, group in zip(axes, ("by category", "by pointer")):
        keys = list(next(iter(tables.values()))[group])
        x = np.arange(len(keys))
        for k, (label, s) in enumerate(tables.items()):
            ax.bar(x + (k - 1) * 0.27, [s[group][key]["accuracy"] for key in keys], 0.27, label=label)
        if group == "by pointer":
            ax.axhline(chance, color="black", lw=1, ls="--", label="chance")
        ax.set_xticks(x, keys, rotation=25, fontsize=8)
        ax.set(ylim=(0, 1), title=f"accuracy {group}")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    run.save_plot(fig, "accuracy")
