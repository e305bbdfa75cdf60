"""``vision-foundation``: the offline multimodal foundation the GPT-4V and Kosmos-G rows build on.

A small CLIP is trained contrastively on the procedural world (image-text retrieval recall@1/5 on held-out scenes,
zero-shot colour / shape), then a LLaVA-style VLM (that CLIP's vision tower + an MLP projector into the bundled
SmolLM2, frozen but for LoRA adapters on its attention) is instruction-tuned on questions about training scenes.
Its held-out accuracy per question kind is measured on scenes of seen (colour, shape) pairs and on scenes holding
pairs never seen in training, beside the text-only floor of each kind. ``full`` saves its VLM under
``$TENFOLD_HOME/vision/full-profile``; later ``quick`` runs still train their own (the verdict is theirs) and show
the cached full-profile VLM's accuracy beside. What every run trains is also stored by recipe
(:mod:`tenfold.vision.cache`) for the experiments that build on it.
"""
from __future__ import annotations

import json
import time

import torch

from tenfold.report import experiment

QA = ("colour", "shape", "count", "position")


@experiment(
    "vision-foundation", paper="gpt4v-dawn",
    claim="An LLM given a vision encoder through a learned projection answers questions about images (attributes, "
          "counting, spatial relations), including about attribute combinations it never saw - the capabilities the "
          "GPT-4V exploration probes; here a miniature built offline: a small CLIP + the bundled SmolLM2.",
    paper_numbers={"GPT-4V (Yang et al. 2023)": "qualitative samples only; no benchmark numbers are reported",
                   "what the paper probes": "attribute recognition, counting, spatial relations, captioning, "
                                            "interleaved images and text, visual referring prompting",
                   "recipe used here": "LLaVA-style: CLIP ViT features -> MLP projector -> LLM input embeddings"})
def vision_foundation(run):
    from tenfold.vision.cache import VLMRecipe, store, trained_clip, trained_vlm
    from tenfold.vision.clip import retrieval_recall, zero_shot_attributes
    from tenfold.vision.questions import KINDS, questions
    from tenfold.vision.vlm_eval import by_kind, evaluate_vlm, majority_baseline
    from tenfold.vision.world import scenes

    clip_steps, clip_batch = run.pick(20, 300, 3000), 64
    vlm_steps, vlm_batch = run.pick(4, 100, 1500, shrunk="VLM steps"), 16
    n_eval = run.pick(10, 100, 500)
    image_tokens, lr, lora_rank = 16, 1e-3, 16
    run.settings.update(
        world="1-4 objects (6 shapes x 7 colours x 2 sizes) on a 3x3 grid, 64x64 px, 6 held-out (colour, shape) pairs",
        clip=f"CLIPModel from scratch: ViT 8-px patches, width 128, 4+4 layers; {clip_steps} steps x {clip_batch}, "
             "lr 1e-3, fresh scenes each step",
        vlm=f"CLIP vision tower (trained on) + MLP projector -> {image_tokens} tokens per image -> SmolLM2-135M "
            f"(frozen, bfloat16) with LoRA r={lora_rank} on attention; "
            f"{vlm_steps} steps x {vlm_batch} questions (colour/shape/count/position/caption in turn; the first "
            f"30% of steps on single-object scenes), lr {lr}, loss averaged per example",
        eval=f"{n_eval} held-out questions per split (kinds in turn), greedy, first word must match; captions scored "
             "by object recall")

    recipe = VLMRecipe(clip_steps, vlm_steps, clip_batch, vlm_batch, image_tokens, lora_rank, lr, seed=0)
    t0 = time.perf_counter()
    run.progress(f"CLIP ({clip_steps} steps)")
    clip, tok, clip_losses = trained_clip(recipe)
    clip_s = time.perf_counter() - t0
    n_ret = run.pick(50, 200, 500)
    ours = {"CLIP recall (held-out scenes)": _pct(retrieval_recall(clip, tok, scenes(n_ret, "test"))),
            "CLIP recall (unseen pairs)": _pct(retrieval_recall(clip, tok, scenes(n_ret, "unseen"))),
            "CLIP zero-shot attribute accuracy": zero_shot_attributes(clip, tok),
            "CLIP retrieval pool": f"{n_ret} scenes (chance recall@1 {1 / n_ret:.3f}, @5 {5 / n_ret:.3f})"}

    run.progress(f"VLM ({vlm_steps} steps)")
    t1 = time.perf_counter()
    vlm, vlm_losses = trained_vlm(recipe, clip)
    vlm_s = time.perf_counter() - t1
    # kept for kosmos-g and lmm-probing, which start from this foundation (the same recipe is never trained twice)
    store(recipe, clip, tok, vlm, {"clip": clip_losses, "vlm": vlm_losses}, clip_s + vlm_s)

    run.progress("evaluating the VLM")

    raw = {}  # split -> (questions, per-question scores) of this run's VLM

    def score(model, keep: bool = False):
        table, samples = {}, []
        for split in ("test", "unseen"):
            qs = questions(n_eval, split, kinds=KINDS, seed=0)
            answers = evaluate_vlm(model, qs)
            table[split] = by_kind(qs, [s for _, s in answers])
            if keep:
                raw[split] = (qs, [s for _, s in answers])
            samples += [{"split": split, "question": q.text, "truth": q.answer, "answer": a}
                        for q, (a, _) in list(zip(qs, answers))[:5]]
        return table, samples

    table, samples = score(vlm, keep=True)
    floor = majority_baseline(questions(n_eval, "test", kinds=KINDS, seed=0))
    per_kind_n = n_eval // len(KINDS)
    ours["VLM accuracy (seen pairs)"] = table["test"]
    ours["VLM accuracy (unseen pairs)"] = table["unseen"]
    cache = _full_run_dir()
    if run.profile == "full":
        vlm.save(cache / "vlm")
        (cache / "vlm" / "run.json").write_text(json.dumps({"clip_steps": clip_steps, "vlm_steps": vlm_steps,
                                                            "date": time.strftime("%Y-%m-%d")}))
    elif run.profile == "quick" and (cache / "vlm" / "run.json").exists():
        from tenfold.vision.vlm import VisionLanguageModel

        meta = json.loads((cache / "vlm" / "run.json").read_text())
        run.progress("evaluating the cached full-profile VLM")
        cached, _ = score(VisionLanguageModel.load(cache / "vlm", lm_dtype=torch.bfloat16))
        key = f"cached full-profile VLM ({meta['vlm_steps']} steps, trained {meta['date']} by `--profile full`)"
        ours[f"{key}, seen pairs"] = cached["test"]
        ours[f"{key}, unseen pairs"] = cached["unseen"]
    ours["text-only floor (most common training answer given the question text)"] = floor
    ours["questions per kind and split"] = per_kind_n
    ours["training time (s)"] = {"CLIP": round(clip_s, 1), "VLM": round(vlm_s, 1)}
    ours["example answers"] = "; ".join(f"[{s['split']}] {s['question']} -> {s['answer']!r} (truth {s['truth']!r})"
                                        for s in samples[:6])
    _plots(run, clip_losses, vlm_losses, table, floor)
    checks = _checks(raw, floor)
    return {"ours": ours, "checks": checks, "why": f"{_why(checks)} ({vlm_steps} VLM training steps in this run)"}


def _full_run_dir():
    """Where ``--profile full`` keeps its VLM, so that later quick runs can show it beside their own."""
    from pathlib import Path

    from tenfold import home

    return Path(home()) / "vision" / "full-profile"


def _pct(d: dict) -> dict:
    return {k: round(v, 3) for k, v in d.items()}


def _checks(raw: dict, floor: dict) -> list:
    """One check per question kind and split: the VLM's accuracy minus the text-only floor's (the most common
    training answer given the question text, scored on the same questions), > 0, with Newcombe's interval from the
    two Wilson intervals (the floor is measured on as few questions as the VLM), on seen and on unseen (colour,
    shape) pairs."""
    from tenfold.report.verdict import Check, difference, proportion

    checks = []
    for split, label in (("test", "seen pairs"), ("unseen", "unseen pairs")):
        qs, scores = raw[split]
        for kind in QA:
            right = [s for q, s in zip(qs, scores) if q.kind == kind]
            vlm = proportion(round(sum(right)), len(right), unit="questions")
            base = proportion(round(floor[kind] * len(right)), len(right), unit="questions")
            checks.append(Check(f"{kind} accuracy minus the text-only floor, {label}", difference(vlm, base)))
    return checks


def _why(checks: list) -> str:
    shown = [c.name.split(" accuracy")[0] + (" (unseen)" if "unseen" in c.name else "") for c in checks
             if c.status == "shown"]
    return (f"above the text-only floor beyond the 95% interval: {', '.join(shown) or 'no question kind'} "
            f"(of {len(checks)} kind x split checks; accuracy minus floor: "
            + "; ".join(f"{c.name.split(' accuracy')[0]}{' (unseen)' if 'unseen' in c.name else ''} "
                        f"{c.effect.value:+.2f}" for c in checks) + ")")


def _plots(run, clip_losses, vlm_losses, table, floor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot(clip_losses, lw=1)
    axes[0].set(title="CLIP contrastive loss", xlabel="step")
    axes[1].plot(vlm_losses, lw=1, color="tab:orange")
    axes[1].set(title="VLM answer loss (per-example mean)", xlabel="step")
    fig.tight_layout()
    run.save_plot(fig, "training")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(QA))
    ax.bar(x - 0.2, [table["test"][k] for k in QA], 0.4, label="seen pairs (test)")
    ax.bar(x + 0.2, [table["unseen"][k] for k in QA], 0.4, label="unseen pairs")
    ax.scatter(x, [floor[k] for k in QA], color="black", marker="_", s=600, label="text-only floor", zorder=3)
    ax.set_xticks(x, QA)
    ax.set(ylim=(0, 1), ylabel="accuracy", title="VLM held-out accuracy per question kind")
    ax.legend(fontsize=8)
    fig.tight_layout()
    run.save_plot(fig, "accuracy")
