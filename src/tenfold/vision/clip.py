"""A small CLIP trained contrastively on the procedural world (Radford et al. 2021; the image-text encoder the
seed week's multimodal systems build on).

transformers' ``CLIPModel`` with a small config (ViT with 8-pixel patches over 64 x 64 images, a 4-layer text
transformer), trained from scratch with the symmetric InfoNCE loss (``return_loss=True``) on (image, caption)
pairs of the world. The text side uses a word-level tokenizer over the world's closed vocabulary (built with
``tokenizers``). ``--from-pretrained`` in the CLI loads a real CLIP checkpoint instead through the same classes.
Evaluation: image-to-text and text-to-image recall@k over held-out scenes, and zero-shot attribute
classification of single objects (prompt ensembles: every "a SIZE COLOUR SHAPE" caption with the value).
"""
from __future__ import annotations

import re

import numpy as np
import torch

from tenfold.errors import TenfoldError
from tenfold.vision.world import COLOURS, SHAPES, Obj, Scene, render, scenes

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


def world_vocabulary() -> list[str]:
    """Every word a world caption can contain (deterministic order)."""
    words = set()
    for s in scenes(400, "train") + scenes(100, "unseen"):
        for c in s.captions(k=8):
            words.update(re.findall(r"[a-z]+|:|,", c.lower()))
    words.update(COLOURS)
    words.update(SHAPES)
    return sorted(words)


def world_tokenizer(max_length: int = 40):
    """A word-level ``PreTrainedTokenizerFast`` over the world's vocabulary (lower case, punctuation split)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([PAD, BOS, EOS, UNK] + world_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, 1), (EOS, 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   model_max_length=max_length)
    return fast


def small_clip(vocab_size: int, image_size: int = 64, width: int = 128, layers: int = 4, patch_size: int = 8,
               seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                         num_attention_heads=4, max_position_embeddings=40, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2),
        vision_config=dict(image_size=image_size, patch_size=patch_size, hidden_size=width, intermediate_size=2 * width,
                           num_hidden_layers=layers, num_attention_heads=4),
        projection_dim=width)
    return CLIPModel(cfg)


def pixels(images, image_size: int = 64) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) floats in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB").resize((image_size, image_size)), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def train_clip(model, tokenizer, steps: int = 300, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
               image_size: int = 64, progress=None, run_dir=None, resume: bool = False,
               checkpoint_every: int = 0) -> list[float]:
    """Contrastive training on fresh training scenes each step (one random caption per image); the loss per step.

    Runs on the shared loop (:func:`tenfold.models.finetune.train_steps`): with ``run_dir`` it checkpoints every
    ``checkpoint_every`` steps and ``resume`` continues exactly (scenes come from the step, the caption sampler's
    state is checkpointed). Under ``accelerate launch`` each process takes its rows of the batch and contrasts
    them among themselves (no gathering of the other processes' embeddings), so N processes see batches of
    ``batch_size / N`` negatives. Raises TenfoldError for steps < 1 or a batch under 2.
    """
    from tenfold.models.finetune import GeneratorState, adamw_cosine, my_rows, train_steps

    if steps < 1 or batch_size < 2:
        raise TenfoldError("steps must be >= 1 and the batch size >= 2 (the loss contrasts pairs in a batch)")
    opt, sched = adamw_cosine(model.parameters(), lr, steps, warmup=steps // 10,  # no warm-up under 10 steps
                              weight_decay=0.05)
    rng = np.random.default_rng(seed)

    def batch_for_step(step: int):
        batch = scenes(batch_size, "train", seed=seed * 100_000 + step)
        caps = [s.captions()[rng.integers(len(s.captions()))] for s in batch]  # every process draws all
        mine, share = my_rows(len(batch))
        batch, caps = batch[mine], caps[mine]
        enc = tokenizer(caps, padding=True, return_tensors="pt")
        return dict(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                    pixel_values=pixels([render(s, image_size) for s in batch], image_size)), share

    def loss_of(clip, batch) -> torch.Tensor:
        inputs, share = batch
        return clip(**inputs, return_loss=True).loss * share

    return train_steps(model, opt, batch_for_step, loss_of, steps=steps, schedule=sched, clip=1.0,
                       run_dir=run_dir, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
                       generators=[GeneratorState(rng)])


@torch.no_grad()
def embed(model, tokenizer, images=None, texts=None, image_size: int = 64):
    out = {}
    if images is not None:
        v = model.get_image_features(pixel_values=pixels(images, image_size).to(model.device))
        v = getattr(v, "pooler_output", v)
        out["image"] = torch.nn.functional.normalize(v, dim=-1)
    if texts is not None:
        enc = tokenizer(list(texts), padding=True, return_tensors="pt").to(model.device)
        t = model.get_text_features(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        t = getattr(t, "pooler_output", t)
        out["text"] = torch.nn.functional.normalize(t, dim=-1)
    return out


def retrieval_recall(model, tokenizer, test: list[Scene], ks=(1, 5), image_size: int = 64) -> dict:
    """Image->text and text->image recall@k, first caption of each held-out scene as its text."""
    e = embed(model, tokenizer, [render(s, image_size) for s in test], [s.captions()[0] for s in test], image_size)
    sim = e["image"] @ e["text"].T
    truth = torch.arange(len(test), device=sim.device)
    out = {}
    for k in ks:
        out[f"image->text@{k}"] = float((sim.topk(k, dim=1).indices == truth[:, None]).any(1).float().mean())
        out[f"text->image@{k}"] = float((sim.T.topk(k, dim=1).indices == truth[:, None]).any(1).float().mean())
    return out


def zero_shot_attributes(model, tokenizer, n: int = 100, seed: int = 0, image_size: int = 64) -> dict:
    """Accuracy of choosing the right colour / shape of single-object scenes (nearest prompt-ensemble centroid)."""
    rng = np.random.default_rng(seed)
    objs = [Obj(SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))],
                ("small", "large")[rng.integers(2)], int(rng.integers(3)), int(rng.integers(3))) for _ in range(n)]
    images = [render(Scene([o], "black"), image_size) for o in objs]
    img = embed(model, tokenizer, images=images, image_size=image_size)["image"]
    out = {}
    for attr, values in (("colour", list(COLOURS)), ("shape", list(SHAPES))):
        protos = []
        for v in values:  # prompt ensembling: every caption "a SIZE COLOUR SHAPE" with this attribute value
            prompts = [f"a {size} {c} {sh}" for size in ("small", "large") for c in COLOURS for sh in SHAPES
                       if (c if attr == "colour" else sh) == v]
            protos.append(torch.nn.functional.normalize(embed(model, tokenizer, texts=prompts)["text"].mean(0), dim=-1))
        pred = (img @ torch.stack(protos).T).argmax(1).tolist()
        out[attr] = float(np.mean([values[p] == getattr(o, attr) for p, o in zip(pred, objs)]))
    return out
