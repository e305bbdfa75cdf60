"""LM-ft: retrieval-augmented instruction tuning of the language model (Lin et al. 2023, Sec. 2.2).

Every training question is paired with each of its top-k retrieved chunks, one example per chunk
("Background: chunk" + the question), and the LM learns to produce the answer - the loss covers the
answer tokens only - so that it learns both to use relevant background and to ignore distracting chunks.
LoRA adapters (``peft``) on the attention projections by default, merged into the weights afterwards; full
fine-tuning with ``lora_r=0``. Training runs on the shared ``accelerate`` loop (:func:`tenfold.models.finetune.fit`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tenfold.errors import TenfoldError
from tenfold.models.finetune import answer_only_batch, fit, is_main_process, save_checkpoint
from tenfold.radit.reader import answer_ids, prompt_ids


def lm_ft_examples(tokenizer, questions, hits, passages: list[str], k: int) -> list[tuple[list[int], list[int]]]:
    """One (prompt, answer) example per (question, retrieved chunk) among the top ``k``."""
    out = []
    for q, h in zip(questions, hits):
        target = answer_ids(tokenizer, q.answer)
        for i, _ in h[:k]:
            out.append((prompt_ids(tokenizer, q.question, [passages[i]]), target))
    if not out:
        raise TenfoldError("no LM-ft examples (no questions or no retrieved chunks)")
    return out


def finetune_lm(model, tokenizer, examples: list, steps: int = 60, batch_size: int = 8, lr: float = 2e-4,
                lora_r: int = 8, seed: int = 0, run_dir: str | Path | None = None, resume: bool = False,
                checkpoint_every: int = 0, progress=None, stop_after: int | None = None):
    """Fine-tune ``model`` on the examples; return (the trained model with LoRA merged, the losses).

    ``stop_after``: stop with a checkpoint after that step (:class:`~tenfold.models.finetune.TrainingStopped`)."""
    if steps < 1 or batch_size < 1:
        raise TenfoldError("steps and batch size must be positive")
    if lora_r < 0:
        raise TenfoldError(f"lora_r must be >= 0 (got {lora_r})")
    if not examples:
        raise TenfoldError("no LM-ft examples")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if lora_r:
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)  # LoRA's A matrices are drawn here: from the seed, not from whatever ran before

        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                 task_type="CAUSAL_LM"))

    def batch_for_step(step: int) -> dict:
        rows = np.random.default_rng([seed, step]).integers(0, len(examples), batch_size)
        return answer_only_batch([examples[i] for i in rows], pad)

    losses = fit(model, batch_for_step, steps=steps, lr=lr, weight_decay=0.0, seed=seed, run_dir=run_dir,
                 resume=resume, checkpoint_every=checkpoint_every, progress=progress, stop_after=stop_after)
    if lora_r:
        model = model.merge_and_unload()
    model.eval()
    if run_dir is not None and is_main_process():  # under `accelerate launch`, one process writes
        save_checkpoint(model, tokenizer, Path(run_dir) / "model")
    return model, losses
