"""The trained-once store of CLIP + VLM recipes: atomic writes, training once, loading the same weights back."""
import os
import subprocess

import pytest
import torch

from tenfold.vision.cache import VLMRecipe, atomic_dir, cached_vlm, load, recipe_dir


def _staging(tmp_path):
    return sorted(p.name for p in tmp_path.glob("thing.partial*"))


def test_atomic_dir_replaces_whole_or_leaves_the_old(tmp_path):
    where = tmp_path / "thing"
    with atomic_dir(where) as tmp:
        assert tmp.name == f"thing.partial-{os.getpid()}"
        (tmp / "a").write_text("1")
    assert (where / "a").read_text() == "1" and not _staging(tmp_path)
    with pytest.raises(RuntimeError):
        with atomic_dir(where) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("killed half-way")
    assert (where / "a").read_text() == "1" and not _staging(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"thing.partial-{dead.pid}").mkdir()  # left by a killed process
    (tmp_path / "thing.partial").mkdir()  # left by an older tenfold
    with atomic_dir(where) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in where.iterdir()) == ["b"] and not _staging(tmp_path)


def test_two_processes_building_one_cache_keep_the_first_complete_one(tmp_path):
    """Another live process's staging folder is left alone; a cache it published (done.json) while we were writing
    ours is kept, ours discarded, so a reader of the published cache never sees it removed."""
    where = tmp_path / "thing"
    other = tmp_path / f"thing.partial-{os.getppid()}"  # a live process's folder, mid-write
    other.mkdir()
    with atomic_dir(where) as tmp:
        assert other.exists()
        (tmp / "mine").write_text("ours")
        where.mkdir()  # the other process finishes first
        (where / "done.json").write_text("{}")
    assert sorted(p.name for p in where.iterdir()) == ["done.json"]
    assert _staging(tmp_path) == [other.name]


def test_recipe_keys_differ_in_every_setting():
    base = VLMRecipe()
    changed = [VLMRecipe(clip_steps=1), VLMRecipe(vlm_steps=1), VLMRecipe(clip_batch=1), VLMRecipe(vlm_batch=1),
               VLMRecipe(image_tokens=4), VLMRecipe(lora_rank=0), VLMRecipe(lr=1e-4), VLMRecipe(seed=1)]
    assert len({r.key() for r in [base, *changed]}) == len(changed) + 1


@pytest.mark.slow
def test_a_recipe_is_trained_once_and_loaded_after(tmp_path, monkeypatch):
    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path))
    recipe = VLMRecipe(clip_steps=2, vlm_steps=1, clip_batch=4, vlm_batch=2, image_tokens=4, lora_rank=2)
    assert load(recipe) is None
    calls = []
    clip, tok, vlm, info = cached_vlm(recipe, progress=lambda *a: calls.append(a[0]))
    assert info["source"] == "trained in this run" and calls == ["CLIP", "CLIP", "VLM"]
    assert len(info["losses"]["clip"]) == 2 and len(info["losses"]["vlm"]) == 1
    assert (recipe_dir(recipe) / "done.json").exists()
    clip2, _, vlm2, info2 = cached_vlm(recipe, progress=lambda *a: calls.append(a[0]))
    assert info2["source"].startswith("cached in") and len(calls) == 3  # nothing trained the second time
    assert info2["train_s"] == info["train_s"]
    for a, b in ((clip, clip2), (vlm.projector, vlm2.projector)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    lora = {k: v for k, v in vlm.lm.state_dict().items() if "lora_" in k}
    assert lora and all(torch.equal(v, vlm2.lm.state_dict()[k]) for k, v in lora.items())
    assert tok("a red circle").input_ids
