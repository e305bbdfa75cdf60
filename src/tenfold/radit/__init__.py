"""RA-DIT (Lin et al. 2023): retrieval-augmented dual instruction tuning of a language model and its retriever."""
import lazy_loader as _lazy

# The public API, imported on first use: `import tenfold.radit` (and building the CLI) stays cheap.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "data": ["Dataset", "Question", "build", "is_correct"],
    "lm_ft": ["finetune_lm", "lm_ft_examples"],
    "reader": ["answer_logprob", "ensemble_weights", "prompt_ids", "replug_generate"],
    "retriever": ["DualEncoder", "lsr_distribution", "recall_at_k", "retriever_kl", "train_query_encoder"],
})
