"""AlignerNet (Kosmos-G, Pan et al. 2023, Sec. 2.3): from the MLLM's output space to the decoder's text space.

An encoder-decoder transformer with learnable latent queries. The encoder side turns a variable-length sequence
of MLLM hidden states into exactly the shape of the CLIP text encoder's output (``target_length`` x ``target_dim``)
by letting ``target_length`` learned queries cross-attend to the (projected) MLLM states; the decoder side maps
that back to the MLLM space with learned position queries, so a reconstruction loss keeps the aligned code
faithful to the MLLM's input. Stage "align" trains it on captions with MSE to the CLIP text encoder's output plus
the reconstruction MSE; the result replaces the CLIP text encoder as the U-Net's condition, unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from tenfold.errors import TenfoldError


def _stack(width: int, heads: int, layers: int) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
    return nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(width))


class AlignerNet(nn.Module):
    def __init__(self, source_dim: int, target_dim: int, target_length: int, width: int = 256, heads: int = 4,
                 layers: int = 2, max_source: int = 512):
        super().__init__()
        self.config = {"source_dim": source_dim, "target_dim": target_dim, "target_length": target_length,
                       "width": width, "heads": heads, "layers": layers, "max_source": max_source}
        self.source_dim, self.target_dim, self.target_length, self.max_source = (source_dim, target_dim, target_length,
                                                                                 max_source)
        self.source_in = nn.Sequential(nn.LayerNorm(source_dim), nn.Linear(source_dim, width))
        self.source_pos = nn.Parameter(torch.randn(max_source, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(target_length, width) * 0.02)
        self.encoder = _stack(width, heads, layers)
        self.to_target = nn.Linear(width, target_dim)
        self.target_in = nn.Linear(target_dim, width)
        self.recon_queries = nn.Parameter(torch.randn(max_source, width) * 0.02)
        self.decoder = _stack(width, heads, layers)
        self.to_source = nn.Linear(width, source_dim)

    def _check(self, source: torch.Tensor, mask: torch.Tensor | None) -> None:
        if source.ndim != 3 or source.shape[-1] != self.source_dim:
            raise TenfoldError(f"the MLLM states must be (batch, length, {self.source_dim}); got {tuple(source.shape)}")
        if not 0 < source.shape[1] <= self.max_source:
            raise TenfoldError(f"the MLLM input has {source.shape[1]} positions; the aligner takes 1 to "
                               f"{self.max_source}")
        if mask is not None and mask.shape != source.shape[:2]:
            raise TenfoldError(f"the mask must be {tuple(source.shape[:2])}; got {tuple(mask.shape)}")

    def forward(self, source: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, source_dim) MLLM states (``mask``: 1 = real position) -> (B, target_length, target_dim)."""
        self._check(source, mask)
        memory = self.source_in(source.float()) + self.source_pos[: source.shape[1]]
        queries = self.queries.expand(source.shape[0], -1, -1)
        pad = None if mask is None else mask == 0
        return self.to_target(self.encoder(queries, memory, memory_key_padding_mask=pad))

    def reconstruct(self, aligned: torch.Tensor, length: int) -> torch.Tensor:
        """(B, target_length, target_dim) -> (B, length, source_dim): the MLLM states back from the aligned code."""
        if not 0 < length <= self.max_source:
            raise TenfoldError(f"length must be 1 to {self.max_source}")
        memory = self.target_in(aligned)
        queries = self.recon_queries[:length].expand(aligned.shape[0], -1, -1)
        return self.to_source(self.decoder(queries, memory))

    def align_losses(self, source: torch.Tensor, mask: torch.Tensor | None, target: torch.Tensor) -> dict:
        """``mse``: aligned vs the CLIP text encoder's output; ``rec``: reconstruction of the layer-normalised MLLM
        states (padding masked out)."""
        if target.shape[1:] != (self.target_length, self.target_dim):
            raise TenfoldError(f"the target must be (batch, {self.target_length}, {self.target_dim}); got "
                               f"{tuple(target.shape)}")
        aligned = self(source, mask)
        mse = nn.functional.mse_loss(aligned, target)
        rec = self.reconstruct(aligned, source.shape[1])
        goal = nn.functional.layer_norm(source.float(), source.shape[-1:])  # scale-free: LM states have outliers
        err = (rec - goal).pow(2).mean(-1)
        weights = torch.ones_like(err) if mask is None else mask.float()
        return {"mse": mse, "rec": (err * weights).sum() / weights.sum(), "aligned": aligned}


def mllm_states(vlm, prompts: list[str], images: list[list] | None = None, max_length: int = 512):
    """Last-layer hidden states of the MLLM (a :class:`~tenfold.vision.vlm.VisionLanguageModel`) over interleaved
    prompts such as ``"<image> and <image> side by side"``: (B, S, d) float32 and the (B, S) mask.

    ``images[i]`` holds the images of prompt ``i``, in placeholder order; a count mismatch is a clear error.
    """
    from tenfold.vision.vlm import IMAGE_TOKEN

    images = images if images is not None else [[] for _ in prompts]
    if len(images) != len(prompts):
        raise TenfoldError(f"{len(prompts)} prompts but {len(images)} image lists")
    rows = []
    for i, (text, ims) in enumerate(zip(prompts, images)):
        if not text.strip():
            raise TenfoldError(f"prompt {i} is empty")
        ids = vlm.expand(vlm.tokenizer(text, add_special_tokens=False).input_ids)
        found = vlm.count_images(ids)
        if found != len(ims):
            raise TenfoldError(f"prompt {i} has {found} {IMAGE_TOKEN} placeholder(s) but {len(ims)} image(s) were "
                               "given")
        if len(ids) > max_length:
            raise TenfoldError(f"prompt {i} is {len(ids)} tokens long; at most {max_length}")
        rows.append(ids)
    width = max(map(len, rows))
    pad = vlm.tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=vlm.lm.device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=vlm.lm.device)
    flat = [im for ims in images for im in ims]
    feats = vlm.encode_images(vlm.pixel_values(flat)) if flat else None
    embeds = vlm.embed(ids, feats)
    hidden = vlm.lm.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    return hidden.float(), mask
