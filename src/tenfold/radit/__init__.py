"""RA-DIT (Lin et al. 2023): retrieval-augmented dual instruction tuning of a language model and its retriever."""
from tenfold.radit.data import Dataset, Question, build, is_correct
from tenfold.radit.lm_ft import finetune_lm, lm_ft_examples
from tenfold.radit.reader import answer_logprob, ensemble_weights, prompt_ids, replug_generate
from tenfold.radit.retriever import DualEncoder, lsr_distribution, recall_at_k, retriever_kl, train_query_encoder

__all__ = ["Dataset", "Question", "build", "is_correct", "finetune_lm", "lm_ft_examples", "answer_logprob",
           "ensemble_weights", "prompt_ids", "replug_generate", "DualEncoder", "lsr_distribution", "recall_at_k",
           "retriever_kl", "train_query_encoder"]
