"""The shared accelerate loop (``train_steps``) under the loops that are not ``fit``: exact resume, clear errors."""
import numpy as np
import pytest
import torch

from tenfold.errors import TenfoldError, TrainingStopped
from tenfold.models.finetune import Forward, GeneratorState, my_rows, train_steps


class Crash(Exception):
    pass


def crash_at(n):
    def progress(step, total, loss):
        if step == n:
            raise Crash

    return progress


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_clip_training_resumes_exactly_after_a_crash(tmp_path):
    from tenfold.vision.clip import small_clip, train_clip, world_tokenizer

    tok = world_tokenizer()
    kw = dict(steps=5, batch_size=6, lr=2e-3, image_size=32)
    whole = small_clip(len(tok), image_size=32, width=32, layers=1, patch_size=8)
    losses = train_clip(whole, tok, **kw)
    model = small_clip(len(tok), image_size=32, width=32, layers=1, patch_size=8)
    with pytest.raises(Crash):
        train_clip(model, tok, **kw, run_dir=tmp_path, checkpoint_every=2, progress=crash_at(3))
    model = small_clip(len(tok), image_size=32, width=32, layers=1, patch_size=8, seed=1)  # the checkpoint decides
    assert train_clip(model, tok, **kw, run_dir=tmp_path, resume=True) == losses  # the caption sampler resumed too
    assert same_weights(model, whole)


def test_decoder_training_resumes_exactly_with_its_caption_and_noise_generators(tmp_path):
    from tenfold.kosmos_g.decoder import TextConditionedDecoder, small_unet, train_decoder
    from tenfold.vision.clip import small_clip, world_tokenizer

    tok = world_tokenizer()
    clip = small_clip(len(tok), width=32, layers=1, seed=0)

    def decoder(seed=0):
        return TextConditionedDecoder(small_unet(cond_dim=32, image_size=32, channels=(16, 32, 32), seed=seed))

    kw = dict(steps=4, batch_size=3, lr=1e-3, p_uncond=0.5)
    whole = decoder()
    losses = train_decoder(whole, clip, tok, **kw)
    with pytest.raises(Crash):
        train_decoder(decoder(), clip, tok, **kw, run_dir=tmp_path, checkpoint_every=2, progress=crash_at(3))
    resumed = decoder(seed=1)
    assert train_decoder(resumed, clip, tok, **kw, run_dir=tmp_path, resume=True) == losses
    assert same_weights(resumed.unet, whole.unet)


def test_one_process_takes_the_whole_batch_unweighted():
    assert my_rows(5) == (slice(0, None, 1), 1.0)


def test_the_loop_trains_in_train_mode_and_leaves_eval_mode_however_it_ends(tmp_path):
    inner, outer = torch.nn.Dropout(0.5), torch.nn.Linear(2, 1)
    module = Forward(lambda x: outer(inner(x)).pow(2).mean(), inner, outer)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    modes = []

    def loss(m, x):
        modes.append((inner.training, outer.training))
        return m(x)

    module.eval()
    train_steps(module, opt, lambda step: torch.ones(4, 2), loss, steps=2)
    assert modes == [(True, True)] * 2 and not module.training and not inner.training
    with pytest.raises(TenfoldError, match="the loss became nan"):
        train_steps(module, opt, lambda step: torch.full((4, 2), float("nan")), loss, steps=2)
    assert not inner.training and not outer.training
    modes.clear()  # train_module: only that part is switched; the others keep their mode
    train_steps(module, opt, lambda step: torch.ones(4, 2), loss, steps=1, train_module=outer)
    assert modes == [(False, True)] and not outer.training


def test_bad_loop_settings_are_clear_errors(tmp_path):
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    batch = lambda step: torch.ones(4, 2)  # noqa: E731
    loss = lambda m, x: m(x).pow(2).mean()  # noqa: E731
    with pytest.raises(TenfoldError, match="steps must be at least 1"):
        train_steps(layer, opt, batch, loss, steps=0)
    with pytest.raises(TenfoldError, match="needs a run directory"):
        train_steps(layer, opt, batch, loss, steps=3, stop_after=1)
    with pytest.raises(TenfoldError, match="nothing to resume"):
        train_steps(layer, opt, batch, loss, steps=3, run_dir=tmp_path / "none", resume=True)
    with pytest.raises(TenfoldError, match="cannot checkpoint a list"):
        GeneratorState([1, 2])
    with pytest.raises(TenfoldError, match="the loss became nan"):
        train_steps(layer, opt, lambda step: torch.full((4, 2), float("nan")), loss, steps=2)


def test_stop_after_leaves_a_checkpoint_that_resumes_to_the_same_run(tmp_path):
    def run(**kw):
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 1)
        opt = torch.optim.AdamW(layer.parameters(), lr=0.05)
        g = np.random.default_rng(0)
        out = train_steps(Forward(lambda x: (layer(x) - 1).pow(2).mean(), layer), opt,
                          lambda step: torch.from_numpy(g.normal(size=(4, 3))).float(), lambda m, x: m(x), steps=5,
                          generators=[GeneratorState(g)], **kw)
        return out, layer

    whole, layer = run()
    with pytest.raises(TrainingStopped, match="stopped after step 2 of 5"):
        run(run_dir=tmp_path, stop_after=2)
    for at_or_before in (2, 1):  # a limit the resumed run would never reach is refused, not run past
        with pytest.raises(TenfoldError, match=f"--stop-after {at_or_before}: the checkpoint is already at step 2"):
            run(run_dir=tmp_path, resume=True, stop_after=at_or_before)
    with pytest.raises(TrainingStopped, match="stopped after step 3 of 5"):
        run(run_dir=tmp_path, resume=True, stop_after=3)
    resumed, again = run(run_dir=tmp_path, resume=True)
    assert resumed == whole and same_weights(again, layer)


@pytest.mark.parametrize("where", ["before the new checkpoint is moved in", "before run_dir/state.json is updated"])
def test_a_run_stopped_while_swapping_checkpoints_resumes_to_the_same_run(tmp_path, monkeypatch, where):
    """Ctrl-C (or a kill) can land between removing the old checkpoint and moving in the new one, or between that
    and writing the step counter: either way the resumed run must be the uninterrupted one."""
    import os

    from tenfold.models import finetune

    def run(**kw):
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 1)
        opt = torch.optim.AdamW(layer.parameters(), lr=0.05)
        g = np.random.default_rng(0)
        out = train_steps(Forward(lambda x: (layer(x) - 1).pow(2).mean(), layer), opt,
                          lambda step: torch.from_numpy(g.normal(size=(4, 3))).float(), lambda m, x: m(x), steps=6,
                          generators=[GeneratorState(g)], checkpoint_every=2, **kw)
        return out, layer

    whole, layer = run()
    real_replace, swaps = os.replace, []

    def replace(src, dst):  # the second checkpoint (step 4) is cut short where `where` says
        if where.startswith("before the new") and os.path.basename(dst) == "checkpoint":
            swaps.append(dst)
            if len(swaps) == 2:
                raise Crash
        real_replace(src, dst)
        if where.startswith("before run_dir") and os.path.basename(dst) == "checkpoint":
            swaps.append(dst)
            if len(swaps) == 2:
                raise Crash

    monkeypatch.setattr(finetune.os, "replace", replace)
    with pytest.raises(Crash):
        run(run_dir=tmp_path)
    monkeypatch.setattr(finetune.os, "replace", real_replace)
    resumed, again = run(run_dir=tmp_path, resume=True)
    assert resumed == whole and same_weights(again, layer)
    assert not (tmp_path / "checkpoint.tmp").exists()  # taken in as the checkpoint, then done with


def test_an_accelerate_config_this_machine_cannot_run_is_one_error(monkeypatch):
    """An FSDP / DeepSpeed config on a machine without GPUs makes Accelerator() raise; the run ends with one
    TenfoldError line (printed once, by rank 0), not a traceback per process. (The raise is simulated.)"""
    import accelerate

    def no_devices(**kwargs):
        raise RuntimeError("There are currently no available devices found, must be one of 'XPU', 'CUDA'.\nmore")

    monkeypatch.setattr(accelerate, "Accelerator", no_devices)
    module = torch.nn.Linear(2, 1)
    with pytest.raises(TenfoldError, match=r"^accelerate cannot set up this run \(RuntimeError: There are currently "
                                           r"no available devices found, must be one of 'XPU', 'CUDA'.\)$"):
        train_steps(module, torch.optim.SGD(module.parameters(), lr=0.1), lambda s: None, lambda m, b: None, steps=1)
