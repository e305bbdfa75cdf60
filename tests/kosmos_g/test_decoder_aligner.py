"""Kosmos-G parts: the conditional diffusion decoder (sampler, training) and AlignerNet (shapes, losses, drop-in)."""
import copy

import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.kosmos_g.aligner import AlignerNet, mllm_states
from tenfold.kosmos_g.decoder import TextConditionedDecoder, clip_text_condition, small_unet, to_images
from tenfold.vision.clip import pixels, small_clip, world_tokenizer
from tenfold.vision.world import render, scenes

COND = 32


@pytest.fixture(scope="module")
def clip_and_tok():
    tok = world_tokenizer()
    return small_clip(len(tok), width=COND, layers=1, seed=0), tok


def tiny_decoder(seed=0):
    return TextConditionedDecoder(small_unet(cond_dim=COND, image_size=32, channels=(16, 32, 32), seed=seed))


def test_sampler_shapes_and_determinism_by_seed(clip_and_tok):
    clip, tok = clip_and_tok
    dec = tiny_decoder()
    cond, _ = clip_text_condition(clip, tok, ["a small red circle", "a large blue star"])
    uncond, _ = clip_text_condition(clip, tok, [""])
    assert cond.shape == (2, 32, COND)
    a = dec.sample(cond, uncond, steps=4, seed=3)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, dec.sample(cond, uncond, steps=4, seed=3))
    assert not torch.equal(a, dec.sample(cond, uncond, steps=4, seed=4))
    images = to_images(a, size=64)
    assert len(images) == 2 and images[0].size == (64, 64)


def test_bad_conditions_are_clear_errors(clip_and_tok):
    dec = tiny_decoder()
    good = torch.zeros(1, 32, COND)
    with pytest.raises(TenfoldError, match="must be \\(batch, tokens, 32\\)"):
        dec.sample(torch.zeros(1, 32, 7), good)
    with pytest.raises(TenfoldError, match="NaN"):
        dec.sample(torch.full((1, 32, COND), float("nan")), good)
    with pytest.raises(TenfoldError, match="same number of tokens"):
        dec.sample(torch.zeros(1, 8, COND), good)
    with pytest.raises(TenfoldError, match="guidance"):
        dec.sample(good, good, guidance=float("nan"))


def test_a_few_decoder_steps_lower_the_diffusion_loss(clip_and_tok):
    clip, tok = clip_and_tok
    dec = tiny_decoder()
    batch = scenes(8, "train", seed=2)
    images = pixels([render(s, 32) for s in batch], 32)
    cond, _ = clip_text_condition(clip, tok, [s.captions()[0] for s in batch])

    def loss():
        with torch.no_grad():
            return dec.loss(images, cond, generator=torch.Generator().manual_seed(0)).item()

    before = loss()
    opt = torch.optim.Adam(dec.unet.parameters(), lr=2e-3)
    for step in range(15):
        opt.zero_grad()
        dec.loss(images, cond, generator=torch.Generator().manual_seed(step)).backward()
        opt.step()
    assert loss() < 0.8 * before


def test_latent_path_through_a_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=32)
    unet = small_unet(cond_dim=COND, image_size=16, channels=(16, 32, 32), in_channels=4)
    dec = TextConditionedDecoder(unet, image_size=32, vae=vae)
    cond = torch.zeros(1, 32, COND)
    assert dec.sample(cond, cond, steps=2).shape == (1, 3, 32, 32)
    assert dec.loss(torch.zeros(2, 3, 32, 32), cond.expand(2, -1, -1)).ndim == 0


def test_aligner_output_plugs_into_the_unet_unchanged(clip_and_tok):
    clip, tok = clip_and_tok
    dec = tiny_decoder()
    dec.unet.requires_grad_(False)
    frozen = copy.deepcopy(dec.unet.state_dict())
    aligner = AlignerNet(source_dim=48, target_dim=COND, target_length=32, width=32, layers=1)
    source, mask = torch.randn(2, 11, 48), torch.tensor([[1] * 11, [1] * 7 + [0] * 4])
    aligned = aligner(source, mask)
    uncond, _ = clip_text_condition(clip, tok, [""])
    assert aligned.shape == (2, 32, COND) and aligned.shape[1:] == uncond.shape[1:]
    assert dec.sample(aligned.detach(), uncond, steps=2).shape == (2, 3, 32, 32)
    # the diffusion loss through the frozen U-Net trains the aligner only
    opt = torch.optim.Adam(aligner.parameters(), lr=1e-3)
    loss = dec.loss(torch.zeros(2, 3, 32, 32), aligner(source, mask))
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in dec.unet.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in aligner.parameters())
    assert all(torch.equal(v, dec.unet.state_dict()[k]) for k, v in frozen.items())
    # padding positions of the MLLM input do not change the aligned code
    longer = torch.cat([source, torch.randn(2, 3, 48)], 1)
    mask2 = torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], 1)
    assert torch.allclose(aligner(longer, mask2), aligner(source, mask), atol=1e-5)


def test_align_losses_fall_and_shapes_are_checked():
    torch.manual_seed(0)
    aligner = AlignerNet(source_dim=24, target_dim=16, target_length=8, width=32, layers=1)
    source, target = torch.randn(4, 6, 24), torch.randn(4, 8, 16)
    opt = torch.optim.Adam(aligner.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        out = aligner.align_losses(source, None, target)
        total = out["mse"] + out["rec"]
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.5 * first
    with pytest.raises(TenfoldError, match="MLLM states must be"):
        aligner(torch.randn(1, 3, 5))
    with pytest.raises(TenfoldError, match="target must be"):
        aligner.align_losses(source, None, torch.randn(4, 7, 16))
    with pytest.raises(TenfoldError, match="takes 1 to"):
        aligner(torch.randn(1, 600, 24))


@pytest.fixture(scope="module")
def tiny_vlm(lm):
    from tenfold.vision.vlm import build_vlm

    clip = small_clip(len(world_tokenizer()), seed=0)
    return build_vlm(clip, lm=copy.deepcopy(lm[0]), tokenizer=lm[1], image_tokens=4)


@pytest.mark.slow
def test_interleaved_prompts_need_exactly_their_images(tiny_vlm, lm):
    vlm = tiny_vlm
    a, b = [render(s) for s in scenes(2, "test")]
    with torch.no_grad():
        states, mask = mllm_states(vlm, ["<image> and <image> side by side", "a red star"], [[a, b], []])
    assert states.shape[:2] == mask.shape and states.shape[-1] == lm[0].config.hidden_size
    assert mask[0].sum() > mask[1].sum()
    with pytest.raises(TenfoldError, match="prompt 0 has 2 <image> placeholder\\(s\\) but 1 image"):
        mllm_states(vlm, ["<image> and <image> side by side"], [[a]])
    with pytest.raises(TenfoldError, match="prompt 0 has 1 <image> placeholder\\(s\\) but 2 image"):
        mllm_states(vlm, ["the <image> shape, in green"], [[a, b]])
    with pytest.raises(TenfoldError, match="empty"):
        mllm_states(vlm, ["  "], [[]])


def test_compositional_instructions_have_parseable_targets():
    from tenfold.kosmos_g.tasks import TASKS, instruction, instructions
    from tenfold.vision.world import HELD_OUT, parse, same_objects

    train = instructions(90, "train")
    assert {i.task for i in train} == set(TASKS)
    assert not any((o.colour, o.shape) in HELD_OUT for i in train for o in list(i.subjects) + i.target.objects)
    unseen = instructions(30, "unseen")
    assert all((i.subjects[0].colour, i.subjects[0].shape) in HELD_OUT for i in unseen)
    for i in train[:12] + unseen[:12]:
        assert i.prompt.count("<image>") == len(i.subjects) == len(i.subject_images())
        assert same_objects(parse(render(i.target, 32)), i.target)
        if i.task == "recolour":
            assert i.target.objects[0].shape == i.subjects[0].shape and i.target.objects[0].colour in i.prompt
        elif i.task == "side by side":
            assert [o.col for o in i.target.objects] == [0, 2]
        elif i.task == "in a row":
            assert len(i.subjects) == 3 and [(o.row, o.col) for o in i.target.objects] == [(1, 0), (1, 1), (1, 2)]
            assert [o.colour for o in i.target.objects] == [o.colour for o in i.subjects]
    assert instruction("above", 5) == instruction("above", 5)
    with pytest.raises(TenfoldError, match="unknown task"):
        instruction("rotate", 0)


@pytest.mark.slow
def test_align_and_instruct_stages_leave_the_unet_frozen(tiny_vlm, clip_and_tok):
    from tenfold.kosmos_g.training import align_stage, generate, instruct_stage

    clip, tok = clip_and_tok
    dec = tiny_decoder()
    frozen = copy.deepcopy(dec.unet.state_dict())
    aligner = AlignerNet(tiny_vlm.lm.config.hidden_size, COND, 32, width=32, layers=1)
    history = align_stage(aligner, tiny_vlm, clip, tok, steps=3, batch_size=4, lr=1e-3)
    assert len(history) == 3 and all(h["mse"] == h["mse"] and h["rec"] >= 0 for h in history)
    before = copy.deepcopy(aligner.state_dict())
    projector = copy.deepcopy(tiny_vlm.projector.state_dict())
    lm_weights = {k: v.clone() for k, v in tiny_vlm.lm.state_dict().items()}
    losses = instruct_stage(aligner, tiny_vlm, dec, steps=1, batch_size=3, lr=1e-3)  # one step learns (no warm-up)
    assert len(losses) == 1 and losses[0] == losses[0]
    assert all(torch.equal(v, dec.unet.state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, aligner.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, tiny_vlm.projector.state_dict()[k]) for k, v in projector.items())
    # as in the paper, the MLLM's own trainable parts may learn too (the LM stays frozen); plus the caption anchor
    anchored = instruct_stage(aligner, tiny_vlm, dec, steps=2, batch_size=3, lr=1e-3, train_mllm=True,
                              anchor_weight=1.0, clip_model=clip, clip_tokenizer=tok)
    assert anchored[0] > 0
    assert any(not torch.equal(v, tiny_vlm.projector.state_dict()[k]) for k, v in projector.items())
    assert all(torch.equal(v, tiny_vlm.lm.state_dict()[k]) for k, v in lm_weights.items())
    assert all(torch.equal(v, dec.unet.state_dict()[k]) for k, v in frozen.items())
    with pytest.raises(TenfoldError, match="caption anchor"):
        instruct_stage(aligner, tiny_vlm, dec, steps=1, batch_size=3, anchor_weight=1.0)
    empty, _ = clip_text_condition(clip, tok, [""])
    subject = render(scenes(1, "test")[0])
    out = generate(aligner, tiny_vlm, dec, empty, ["the <image> shape, in green"], [[subject]], steps=2, seed=1)
    assert out.shape == (1, 3, 32, 32)
    with pytest.raises(TenfoldError, match="placeholder"):
        generate(aligner, tiny_vlm, dec, empty, ["<image> and <image> side by side"], [[subject]], steps=2)
