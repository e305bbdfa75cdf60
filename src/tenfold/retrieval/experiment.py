"""``retrieval-long-context``: window size x {long, retrieve, both} x top-k on needle QA (Xu et al., Tables 2-4)."""
from __future__ import annotations

import numpy as np

from tenfold.report import experiment
from tenfold.report.verdict import Check, accuracy_difference, exact, proportion, unmeasured

METHODS = ("dense", "bm25", "hybrid")  # tenfold.retrieval.retriever.METHODS (not imported here: keeps the registry light)

PAPER = {"Llama2-70B avg of 7 tasks: 4K / 4K+retrieval / 16K / 32K / 32K+retrieval": [31.61, 36.02, 36.78, 37.36, 39.60],
         "claim": "retrieval at 4K matches a 16K window at a fraction of the compute; retrieval helps at every "
                  "window size; top-5 beats top-10/20 at 32K"}


@experiment(
    "retrieval-long-context", paper="retrieval-long-context",
    claim="With the same small model, a short window plus retrieval answers questions about a long document as "
          "well as a long window without retrieval, at a fraction of the prompt tokens, and retrieval helps at every "
          "window size.",
    paper_numbers=PAPER)
def retrieval_long_context(run):
    from tenfold.models import load_lm
    from tenfold.retrieval import Embedder
    from tenfold.retrieval.evaluation import build_documents

    windows = run.pick([512], [512, 2048], [512, 1024, 2048, 4096, 8192])
    ks = run.pick([1], [5], [1, 3, 5, 10], shrunk="top-k")
    n_docs, facts, words = run.pick((1, 2, 1500), (2, 4, 6000), (4, 10, 12000),
                                     shrunk="English documents x facts each x words")
    zh_docs, zh_facts, zh_chars = run.pick((1, 2, 4000), (1, 2, 20000), (2, 10, 40000),
                                           shrunk="Chinese documents x facts each x characters")
    embedder = Embedder()
    chunker = embedder.chunker()
    run.settings.update(model="SmolLM2-135M-Instruct (8,192 positions)", embedder="all-MiniLM-L6-v2, exact FAISS",
                        documents=n_docs, facts_per_document=facts, document_words=words,
                        chunker=chunker.settings(), embedder_reads=embedder.fingerprint(),
                        windows=windows, top_k=ks, answer_tokens=24,
                        recall="recall@k counts the top-k chunks that fit in the window (those the reader saw)",
                        data="Austen text with GeoNames town-register facts (city populations) at depths 5%..95%",
                        multilingual=f"{zh_docs} Chinese document(s) of ~{zh_chars:,} characters (Debian fortunes-zh), "
                                     f"{zh_facts} Chinese town-register facts each, asked in Chinese")
    model, tok = load_lm(quantize=None)
    docs = build_documents(n_docs, words, facts, seed=0)
    configs = [("long", w, 0) for w in windows] + [(m, w, k) for m in ("retrieve", "both") for w in windows for k in ks]
    rows, shares, counts, recall_rows = _answer_the_grid(run, docs, configs, embedder, model, tok, ks)
    run.progress("dense recall when the embedder reads 512 tokens (the model's positions) instead of 256")
    wide_rows = _wide_embedder_recall(docs, ks)
    run.progress("multilingual needle QA (Chinese)")
    multilingual = _chinese_needles(embedder, model, tok, zh_docs, zh_chars, zh_facts, windows[-1], ks)
    run.settings.update(share_of_text_embedded=_percent(
                            float(np.mean(shares + multilingual.pop("shares"))),
                            "non-space characters of the documents inside chunks the embedder reads whole"),
                        chunks_per_document=float(np.mean(counts)),
                        embedder_tokens_not_read=embedder.coverage["tokens_beyond_limit"])
    grid = _grid_cells(rows)
    long_at = {w: grid["long"][str(w)]["all"] for w in windows}
    best_retrieval = {w: max((grid[m][str(w)][f"top{k}"] for m in ("retrieve", "both") for k in ks),
                             key=lambda c: c["accuracy"]) for w in windows}
    short, longest = windows[0], windows[-1]
    ours = {"grid": grid, "questions": sum(len(d.questions) for d in docs),
            "long_accuracy_by_window": {str(w): long_at[w]["accuracy"] for w in windows},
            "best_retrieval_accuracy_by_window": {str(w): best_retrieval[w]["accuracy"] for w in windows},
            "short_retrieval_vs_longest_window": {
                "accuracy": [best_retrieval[short]["accuracy"], long_at[longest]["accuracy"]],
                "prompt_tokens": [best_retrieval[short]["prompt_tokens"], long_at[longest]["prompt_tokens"]]},
            "retriever_recall": _mean_recall(recall_rows), "multilingual": multilingual,
            "dense_recall_by_max_seq_length": {"256": _mean_recall(recall_rows)["dense"],
                                               "512": _mean_recall(wide_rows, ("dense",))["dense"]}}
    _plot_grid(run, grid, long_at, windows, ks)
    checks, ref = _retrieval_checks(rows, windows, ks)
    ours["checked_setting"] = f"retrieve, top-{ref}"
    return {"ours": ours, "checks": checks, "why": _grid_why(ours, grid, long_at, best_retrieval, windows, ks, ref)}


def _answer_the_grid(run, docs, configs, embedder, model, tok, ks) -> tuple[dict, list, list, list]:
    """Index each document and ask its questions in every (mode, window, k) of ``configs``: per-question rows by
    config, each document's share of text embedded and chunk count, and the retrievers' recall rows."""
    from tenfold.retrieval import Reader, Retriever
    from tenfold.retrieval.evaluation import correct

    rows = {c: [] for c in configs}
    shares, counts, recall_rows = [], [], []
    for d, doc in enumerate(docs):
        run.progress(f"document {d + 1}/{len(docs)}: index")
        retriever = Retriever(embedder)
        retriever.add_document(doc.text)
        shares.append(retriever.sources[0]["share_embedded"])
        counts.append(len(retriever))
        recall_rows += _retriever_recall(retriever, doc.questions, ks)
        for mode, window, k in configs:
            run.progress(f"document {d + 1}/{len(docs)}: {mode}, window {window}" + (f", top-{k}" if k else ""))
            reader = Reader(model, tok, window=window)
            for q in doc.questions:
                a = reader.ask(q.question, doc.text, retriever, mode, max(k, 1))
                rows[(mode, window, k)].append({
                    "correct": correct(a.answer, q.answer), "in_prompt": q.answer in a.context,
                    "retrieved": any(q.answer in c["text"] for c in a.chunks), "tokens": a.prompt_tokens,
                    "seconds": a.seconds})
    return rows, shares, counts, recall_rows


def _wide_embedder_recall(docs, ks) -> list[dict]:
    """Dense recall rows when the embedder reads 512 tokens (the model's positions) instead of 256."""
    from tenfold.retrieval import Embedder, Retriever

    wide, wide_rows = Embedder(max_seq_length=512), []
    for doc in docs:
        retriever = Retriever(wide)
        retriever.add_document(doc.text)
        wide_rows += _retriever_recall(retriever, doc.questions, ks, ("dense",))
    return wide_rows


def _grid_cells(rows: dict) -> dict:
    """{mode: {window: {"topK" | "all": accuracy, fact in prompt, prompt tokens, seconds (and recall@k)}}}: the
    per-question rows of each config, averaged."""
    grid: dict = {}
    for (mode, window, k), rs in rows.items():
        cell = {"accuracy": float(np.mean([r["correct"] for r in rs])),
                "fact_in_prompt": float(np.mean([r["in_prompt"] for r in rs])),
                "prompt_tokens": float(np.mean([r["tokens"] for r in rs])),
                "seconds": float(np.mean([r["seconds"] for r in rs]))}
        if mode != "long":
            cell[f"recall_at_{k}"] = float(np.mean([r["retrieved"] for r in rs]))
        grid.setdefault(mode, {}).setdefault(str(window), {})[f"top{k}" if k else "all"] = cell
    return grid


def _plot_grid(run, grid: dict, long_at: dict, windows, ks) -> None:
    """Accuracy and prompt tokens by window, long vs each retrieval setting (the plot ``grid``)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(windows, [long_at[w]["accuracy"] for w in windows], "ko-", label="long (no retrieval)")
    b.plot(windows, [long_at[w]["prompt_tokens"] for w in windows], "ko-", label="long (no retrieval)")
    for mode, style in (("retrieve", "-"), ("both", "--")):
        for k in ks:
            cells = [grid[mode][str(w)][f"top{k}"] for w in windows]
            a.plot(windows, [c["accuracy"] for c in cells], "o" + style, label=f"{mode}, top-{k}")
            b.plot(windows, [c["prompt_tokens"] for c in cells], "o" + style, label=f"{mode}, top-{k}")
    for ax, label in ((a, "accuracy"), (b, "prompt tokens per question")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context window (tokens)")
        ax.set_ylabel(label)
    a.set_ylim(-0.05, 1.05)
    a.legend(fontsize=7)
    fig.tight_layout()
    run.save_plot(fig, "grid")


def _grid_why(ours: dict, grid: dict, long_at: dict, best_retrieval: dict, windows, ks, ref: int) -> str:
    """The result in a sentence: the checked retrieval setting (top-``ref``) against the long windows."""
    short, longest = windows[0], windows[-1]
    fixed = {w: grid["retrieve"][str(w)][f"top{ref}"] for w in windows}
    multilingual = ours["multilingual"]
    return (f"window {short} + retrieval (top-{ref}): accuracy {fixed[short]['accuracy']:.2f} with "
            f"{fixed[short]['prompt_tokens']:.0f} prompt tokens vs window {longest} without: "
            f"{long_at[longest]['accuracy']:.2f} with {long_at[longest]['prompt_tokens']:.0f} "
            f"({ours['questions']} questions); retrieval >= long at "
            f"{sum(fixed[w]['accuracy'] >= long_at[w]['accuracy'] for w in windows)} of {len(windows)} windows (best "
            f"of the grid at {short}: {best_retrieval[short]['accuracy']:.2f}); recall@{ks[-1]} dense / bm25 / hybrid "
            + " / ".join(f"{ours['retriever_recall'][m][f'recall@{ks[-1]}']:.2f}" for m in METHODS)
            + "; Chinese needles: " + " / ".join(f"{multilingual['retriever_recall'][m][f'recall@{ks[-1]}']:.2f}"
                                                  for m in METHODS))


# The paper's 4K + retrieval scores 0.76 points below its 16K window (36.02 vs 36.78, Llama2-70B, avg of 7 tasks)
# and is said to match it: "as well as" allows that much.
MATCH_MARGIN = 0.0076
PAPER_TOP_K = 5  # the paper puts the top-5 retrieved chunks in the prompt (and finds top-5 best at 32K)


def _retrieval_checks(rows: dict, windows: list[int], ks: list[int]) -> tuple[list, int]:
    """The claim's parts as checks on the questions' correctness (and prompt token counts) in ``rows``
    ({(mode, window, k): [per-question dicts]}), for one retrieval setting fixed in advance (retrieve only, the
    paper's top-5, else the largest k run) rather than the best of the grid, which would pick its own noise. Returns
    (checks, the k checked)."""
    ref = PAPER_TOP_K if PAPER_TOP_K in ks else max(ks)
    short, longest = windows[0], windows[-1]

    def correct(mode, window, k):
        return [r["correct"] for r in rows[(mode, window, k)]]

    def versus(name, a, b, **kw):
        return Check(name, accuracy_difference(a, b, "questions"), at_chance=not any(a) and not any(b), **kw)

    tokens_short = [r["tokens"] for r in rows[("retrieve", short, ref)]]
    tokens_long = [r["tokens"] for r in rows[("long", longest, 0)]]
    checks = [
        versus(f"accuracy: window {short} + retrieval minus window {longest} without",
               correct("retrieve", short, ref), correct("long", longest, 0), threshold=-MATCH_MARGIN),
        # prompt token counts are deterministic (fixed documents, exact search): "a fraction" is below 1
        Check(f"prompt tokens: window {short} + retrieval / window {longest} without",
              exact(float(np.mean(tokens_short)) / float(np.mean(tokens_long)), n=len(tokens_short),
                    unit="questions", why="token counts"), threshold=1.0, direction="below"),
    ]
    checks += [versus(f"accuracy at window {w}: retrieval minus none", correct("retrieve", w, ref),
                      correct("long", w, 0), threshold=0.0) for w in windows]
    return checks, ref


def _percent(share: float, of: str) -> str:
    return f"{100 * share:.1f}% ({of})"


def _retriever_recall(retriever, questions, ks, methods=METHODS) -> list[dict]:
    """One row per question and method: did the top-k chunks hold the answer, for each k."""
    out = []
    for q in questions:
        for method in methods:
            hits = retriever.search(q.question, max(ks), method)
            out.append({"method": method, **{k: any(q.answer in h.text for h in hits[:k]) for k in ks}})
    return out


def _mean_recall(rows: list[dict], methods=METHODS) -> dict:
    return {m: {f"recall@{k}": float(np.mean([r[k] for r in rows if r["method"] == m]))
                for k in rows[0] if k != "method"} for m in methods}


def _chinese_needles(embedder, model, tok, n_docs, chars, facts, window, ks) -> dict:
    """Needle QA in Chinese (no spaces): chunking, recall of each retriever, and the reader at ``window``."""
    from tenfold.retrieval import Reader, Retriever
    from tenfold.retrieval.evaluation import build_chinese_documents, correct

    docs = build_chinese_documents(n_docs, chars, facts, seed=0)
    reader = Reader(model, tok, window=window)
    shares, chunks, recall_rows, answers = [], [], [], {}
    for doc in docs:
        retriever = Retriever(embedder)
        retriever.add_document(doc.text)
        shares.append(retriever.sources[0]["share_embedded"])
        chunks.append(len(retriever))
        recall_rows += _retriever_recall(retriever, doc.questions, ks)
        for method in ("dense", "bm25"):
            retriever.method = method
            for q in doc.questions:
                a = reader.ask(q.question, doc.text, retriever, "retrieve", max(ks))
                answers.setdefault(f"retrieve ({method}), top-{max(ks)}", []).append(correct(a.answer, q.answer))
        for q in doc.questions:
            a = reader.ask(q.question, doc.text, None, "long")
            answers.setdefault("long (no retrieval)", []).append(correct(a.answer, q.answer))
    return {"questions": sum(len(d.questions) for d in docs), "chunks_per_document": float(np.mean(chunks)),
            "share_embedded": float(np.mean(shares)), "retriever_recall": _mean_recall(recall_rows),
            f"reader_accuracy_window_{window}": {k: float(np.mean(v)) for k, v in answers.items()}, "shares": shares}


@experiment(
    "streameval", paper="streamingllm",
    claim="Answering questions about earlier lines while streaming (StreamEval, Fig. 8): with attention sinks the "
          "model keeps answering about lines still in the cache however long the stream; window attention without "
          "sinks degrades once the cache is full; nothing evicted can be recalled, unless a retrieval memory of the "
          "evicted text (tenfold's StreamingMemory) brings it back.",
    paper_numbers={"StreamEval (Llama-2-7B-chat, query every 10 lines about the line 20 back)":
                   "sink cache keeps accuracy as the stream grows; dense fails past the pre-training length; "
                   "window attention fails once the cache is full",
                   "memory for evicted text": "not in the paper (it states the limitation: facts outside the cache "
                                              "are lost)"})
def streameval(run):
    from tenfold.models import load_lm
    from tenfold.retrieval import Embedder
    from tenfold.retrieval.streameval import build_stream, run_stream

    n_lines, every = run.pick((30, 3), (80, 3), (600, 3), shrunk="stream lines x question every")
    distances = [1, 2, 4, 8, 16, 32]
    window = 252
    embedder = Embedder()
    memory = {"k": 2, "chunk_words": 100, "embedder": embedder}
    lines, probes = build_stream(n_lines, every, distances, seed=0)
    methods = {"sink": (4, window, None), "window": (0, window + 4, None), "sink+memory": (4, window, memory)}
    run.settings.update(model="SmolLM2-135M-Instruct", lines=n_lines, question_every=every, distances=distances,
                        caches={"sink": f"4+{window}", "window": f"0+{window + 4}",
                                "sink+memory": f"4+{window}, evicted lines in a MiniLM index, top-{memory['k']} "
                                               f"recalled before each question"},
                        line_tokens="about 14",
                        query="cloze: 'Recall of register line N: <town> has' -> the population (greedy, 8 tokens)",
                        evicted="the asked line's first token had left the cache when the answer began")
    model, tok = load_lm(quantize=None)
    by_method, evicted_acc, inside_acc, counts, answers = {}, {}, {}, {}, {}
    for method, (sinks, span, mem) in methods.items():
        run.progress(f"{method} cache")
        rows = run_stream(model, tok, lines, probes, sinks, span, memory=mem)
        acc = {}
        for r in rows:
            acc.setdefault(r["distance"], []).append(r["correct"])
        by_method[method] = {str(d): float(np.mean(v)) for d, v in sorted(acc.items())}
        gone = [r["correct"] for r in rows if r["evicted"]]
        kept = [r["correct"] for r in rows if not r["evicted"]]
        answers[method] = {"inside": kept, "evicted": gone}
        evicted_acc[method] = float(np.mean(gone)) if gone else None
        inside_acc[method] = float(np.mean(kept)) if kept else None
        counts[method] = {"questions": len(rows), "about_evicted_lines": len(gone)}
        if mem is not None:
            counts[method]["evicted_line_recalled"] = float(np.mean([r["recalled"] for r in rows if r["evicted"]] or [0]))
    run.settings.update(memory_chunker=embedder.chunker(memory["chunk_words"]).settings(),
                        memory_embedder_reads=embedder.fingerprint(),
                        memory_share_of_text_embedded=_percent(
                            embedder.share_embedded(), "tokens of every text embedded that the embedder read"),
                        memory_texts_embedded=embedder.coverage["texts"])
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for method, style in zip(methods, ("o-", "s--", "^-")):
        xs = [int(d) for d in by_method[method]]
        ax.plot(xs, list(by_method[method].values()), style, label=method)
    ax.axvline((window + 4) / 20, color="gray", ls=":", label="about the cache's reach")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("lines back")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    run.save_plot(fig, "accuracy")
    sink_in, window_in = inside_acc["sink"] or 0.0, inside_acc["window"] or 0.0
    mem_out, sink_out = evicted_acc["sink+memory"], evicted_acc["sink"]
    ours = {"accuracy_by_distance": by_method, "accuracy_inside_cache": inside_acc,
            "accuracy_evicted": evicted_acc, "questions": counts}
    checks = _streameval_checks(answers)
    why = (f"questions about lines still in the cache: sink {sink_in:.2f} vs window {window_in:.2f} accuracy "
           f"({len(answers['sink']['inside'])} and {len(answers['window']['inside'])} of "
           f"{counts['sink']['questions']} questions per method); about evicted lines: sink "
           + (f"{sink_out:.2f}" if sink_out is not None else "n/a") + ", with the memory "
           + (f"{mem_out:.2f}" if mem_out is not None else "n/a")
           + f" ({counts['sink+memory']['about_evicted_lines']} questions); the 135M model often copies the most "
             f"recent number instead of the asked line's")
    return {"ours": ours, "checks": checks, "why": why}


def _streameval_checks(answers: dict) -> list:
    """StreamEval's claim as checks on per-question correctness: ``answers[method]["inside"|"evicted"]`` lists
    whether each question about a line still in the cache / already evicted was answered (Wilson and Newcombe
    intervals). The bars 0.5 and 0.2 are tenfold's, kept from the earlier verdict: the paper gives no number a 135M
    model could be held to (its Fig. 8: the sink cache keeps its accuracy, window attention falls to about 0)."""
    def acc(method, where):
        return answers[method][where]

    sink, window = acc("sink", "inside"), acc("window", "inside")
    mem, gone = acc("sink+memory", "evicted"), acc("sink", "evicted")
    none = "no question of this run fell in that case"  # a part left unmeasured keeps the verdict from reproduced
    return [
        Check("sink: accuracy on lines still in the cache",
              proportion(sum(sink), len(sink), "questions") if sink else unmeasured(none, "questions"), threshold=0.5),
        Check("accuracy on lines in the cache: sink minus window",
              accuracy_difference(sink, window, "questions") if sink and window else unmeasured(none, "questions"),
              threshold=0.0, smallest=0.2, at_chance=bool(sink and window) and not any(sink) and not any(window)),
        # "unless a retrieval memory of the evicted text brings it back"
        Check("accuracy on evicted lines: sink+memory minus sink",
              accuracy_difference(mem, gone, "questions") if mem and gone else unmeasured(none, "questions"),
              threshold=0.0, at_chance=bool(mem and gone) and not any(mem) and not any(gone)),
    ]

