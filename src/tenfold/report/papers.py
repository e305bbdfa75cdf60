"""The ten papers of the week, in report order, with the headline numbers each paper reports.

These are the papers' own published numbers (see shared/papers.md), shown beside ours.
"""
from __future__ import annotations

PAPERS = [
    {"key": "streamingllm", "title": "Efficient Streaming Language Models with Attention Sinks",
     "authors": "Xiao, Tian, Chen, Han, Lewis", "arxiv": "2309.17453", "package": "tenfold.streaming",
     "headline": "Llama-2-13B on 65K PG19 tokens: window 0+1024 ppl 5158 vs sinks 4+1020 ppl 5.40; "
                 "up to 22.2x faster per token than sliding window with re-computation."},
    {"key": "retrieval-long-context", "title": "Retrieval meets Long Context Large Language Models",
     "authors": "Xu et al. (NVIDIA)", "arxiv": "2310.03025", "package": "tenfold.retrieval",
     "headline": "Llama2-70B avg of 7 tasks: 4K 31.61 -> 4K+retrieval 36.02; 32K 37.36 -> 32K+retrieval 39.60."},
    {"key": "ra-dit", "title": "RA-DIT: Retrieval-Augmented Dual Instruction Tuning",
     "authors": "Lin et al.", "arxiv": "2310.01352", "package": "tenfold.radit",
     "headline": "0-shot MMLU: LLaMA-65B 51.2 -> REPLUG 59.7 -> RA-DIT 64.6."},
    {"key": "pause-tokens", "title": "Think before you speak: Training Language Models With Pause Tokens",
     "authors": "Goyal et al.", "arxiv": "2310.02226", "package": "tenfold.pause",
     "headline": "1B model: PausePT+PauseFT wins on 8 of 9 tasks (SQuAD +18 EM, CommonsenseQA +8)."},
    {"key": "analogical-prompting", "title": "Large Language Models as Analogical Reasoners",
     "authors": "Yasunaga et al.", "arxiv": "2310.01714", "package": "tenfold.prompting",
     "headline": "Self-generated exemplars beat 0-shot CoT and few-shot CoT on GSM8K, MATH, Codeforces, BIG-Bench."},
    {"key": "stop", "title": "Self-Taught Optimizer (STOP): Recursively Self-Improving Code Generation",
     "authors": "Zelikman et al.", "arxiv": "2310.02304", "package": "tenfold.stop",
     "headline": "The self-improved improver transfers: 3-SAT 21.2 -> 75.1, Max-Cut 58.7 -> 74.2."},
    {"key": "space-time-probes", "title": "Language Models Represent Space and Time",
     "authors": "Gurnee, Tegmark", "arxiv": "2310.02207", "package": "tenfold.probes",
     "headline": "Llama-2-70B linear probe test R^2: World .911, USA .864, NYC .359, History .835, Art .885, Headlines .746."},
    {"key": "ndp", "title": "Towards Self-Assembling Artificial Neural Networks through Neural Developmental Programs",
     "authors": "Najarro, Sudhakaran, Risi", "arxiv": "2307.08197", "package": "tenfold.ndp",
     "headline": "CartPole 500 +- 0 with a grown 10-node/33-edge network from 162 NDP parameters."},
    {"key": "kosmos-g", "title": "Kosmos-G: Generating Images in Context with Multimodal Large Language Models",
     "authors": "Pan et al.", "arxiv": "2310.02992", "package": "tenfold.kosmos_g",
     "headline": "Zero-shot multi-entity subject-driven generation by aligning an MLLM to the CLIP text space."},
    {"key": "gpt4v-dawn", "title": "The Dawn of LMMs: Preliminary Explorations with GPT-4V(ision)",
     "authors": "Yang et al.", "arxiv": "2309.17421", "package": "tenfold.lmm",
     "headline": "A qualitative study: test-sample categories and visual referring prompting."},
]

BY_KEY = {p["key"]: p for p in PAPERS}
