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

import math
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
    ours, tables = {}, {}
    t0 = time.perf_counter()
    for label, techniques in VARIANTS.items():
        run.progress(f"probing ({label})")
        results = run_suite(suite, suite_path.parent, backend, out / label.replace(" ", "-"), techniques,
                            max_tokens=max_tokens, concurrency=1)
        s = summary(results)
        tables[label] = s
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
    verdict, why = _verdict(tables, chance, len(referring), len(suite.samples))
    return {"ours": ours, "verdict": verdict, "why": why}


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


def _verdict(tables: dict, chance: float, n_ref: int, n_all: int) -> tuple[str, str]:
    if n_ref < 20:
        return "not reproduced", f"only {n_ref} referring questions (smoke profile): too few to tell"
    visual = ("arrow", "box", "circle", "point", "crop", "marks")
    ptr = tables["constrained"]["by pointer"]  # one-word answers: the fairest reading, chosen before measuring
    per = ptr["arrow"]["n"]
    mean_visual = sum(ptr[p]["accuracy"] for p in visual) / len(visual)
    se = math.sqrt(chance * (1 - chance) / (per * len(visual)))
    referring_ok = mean_visual > chance + 2 * se
    plain, tech = tables["plain"]["accuracy"], max(tables["constrained"]["accuracy"],
                                                   tables["all techniques"]["accuracy"])
    techniques_ok = tech > plain + 2 * math.sqrt(max(plain * (1 - plain), 0.05) / n_all)
    detail = (f"visual pointers {mean_visual:.2f} (constrained prompts) vs chance {chance:.2f} and coordinates "
              f"{ptr['coordinates']['accuracy']:.2f}; overall plain {plain:.2f} vs with techniques {tech:.2f}")
    if referring_ok and techniques_ok:
        return "reproduced", "the VLM follows visual pointers and the techniques help: " + detail
    if referring_ok or techniques_ok:
        return "partly", ("the VLM follows visual pointers, but the techniques do not help: " if referring_ok else
                          "the techniques help, but the VLM does not follow visual pointers: ") + detail
    return "not reproduced", ("the small VLM neither follows visual pointers nor gains from the techniques (it was "
                              "never trained on pointers or instructions beyond one-word answers): " + detail)


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
