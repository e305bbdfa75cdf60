"""``tenfold rag index|ask``: retrieval over long documents, then a reader under a token budget (Xu et al.).

``rag index DOC --out DIR [--append]`` chunks DOC with the embedder's own token limit, embeds and saves it
with DOC's fingerprint; ``rag ask Q --doc DOC [--index DIR]`` refuses an index not built from DOC, and
``rag ask Q --index DIR`` answers from the index's own texts. ``--retriever dense|bm25|hybrid`` picks
the ranking.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

from tenfold.argtypes import directory
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json
from tenfold.progress import progress_bar

METHODS = ("dense", "bm25", "hybrid")


def add_commands(sub) -> None:
    from tenfold.argtypes import DEVICE_HELP, add_device_arg

    p = sub.add_parser("rag", help="retrieval meets long context: index a document, ask questions (long | retrieve | both)")
    verbs = p.add_subparsers(dest="rag_verb", required=True, metavar="{index,ask}")
    q = verbs.add_parser("index", help="chunk, embed and index a document into a directory")
    q.add_argument("doc", help="a UTF-8 text file")
    q.add_argument("--out", type=directory, required=True, help="directory for index.faiss and chunks.json")
    q.add_argument("--append", action="store_true",
                   help="add the document to the index already in --out (the same document twice is added once)")
    q.add_argument("--force", action="store_true", help="replace an index already in --out")
    q.add_argument("--words", type=int, default=300,
                   help="word target per chunk (default 300, as in the paper), capped by the embedder's token limit")
    q.add_argument("--overlap", type=int, default=0, help="words consecutive chunks may share (default 0)")
    q.add_argument("--kind", default=None, choices=["flat", "hnsw", "ivf"],
                   help="exact (flat) or approximate index (default: flat; with --append, the index's own kind)")
    q.add_argument("--embedder", default=None, help="sentence-transformers model (default: bundled all-MiniLM-L6-v2)")
    add_device_arg(q, help=DEVICE_HELP + " (the embedder)")
    q.add_argument("--max-seq-length", type=int, default=None,
                   help="tokens the embedder reads (default: 256 for the bundled model; at most its positions)")
    q.add_argument("--json", action="store_true", help="print the document's fingerprint and chunk counts as JSON")
    q.set_defaults(func=_index)
    q = verbs.add_parser("ask", help="answer a question about a document")
    q.add_argument("question")
    q.add_argument("--doc", default=None, help="the document (a UTF-8 text file); checked against --index if given")
    q.add_argument("--index", default=None,
                   help="an index built by `tenfold rag index` (default: index --doc now); alone, answers from its texts")
    q.add_argument("--mode", default="retrieve", choices=["long", "retrieve", "both"])
    q.add_argument("--retriever", default="dense", choices=METHODS,
                   help="dense (embeddings), bm25 (exact terms) or hybrid (reciprocal-rank fusion); default dense")
    q.add_argument("--k", type=int, default=5, help="chunks to retrieve (default 5)")
    q.add_argument("--window", type=int, default=2048, help="context window in tokens, prompt + answer (default 2048)")
    q.add_argument("--model", default=None, help="reader LM (default: the bundled SmolLM2)")
    add_device_arg(q, help=DEVICE_HELP + " (the reader LM and the embedder)")
    q.add_argument("--json", action="store_true", help="print answer, chunks (text, score) and prompt_tokens as JSON")
    q.set_defaults(func=_ask)


@contextlib.contextmanager
def _warnings_as_lines():
    """Show the retrieval package's warnings as one 'warning: ...' line each on stderr."""
    from tenfold.retrieval.embedder import TruncationWarning, UnknownTextWarning

    ours = (TruncationWarning, UnknownTextWarning)
    with warnings.catch_warnings(record=True) as caught:
        for category in ours:
            warnings.simplefilter("always", category)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, ours):
                    print(f"warning: {w.message}", file=sys.stderr)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _has_index(path: str) -> bool:
    return (Path(path) / "index.faiss").is_file() and (Path(path) / "chunks.json").is_file()


def _index(args) -> int:
    from tenfold.data import read_text
    from tenfold.models import DEFAULT_EMBEDDER
    from tenfold.retrieval import Embedder, Retriever

    text = read_text(args.doc)
    out = Path(args.out)
    if out.exists() and not out.is_dir():  # an index is a folder: never write one over a file (the document itself)
        raise TenfoldError(f"--out {args.out} is an existing file; an index is a folder, give a new or index folder")
    if args.append and args.force:
        raise TenfoldError("--append adds to the index in --out and --force replaces it: give one of them")
    if args.append and out.is_dir() and any(out.iterdir()) and not _has_index(args.out):
        raise TenfoldError(f"--append: {args.out} is not an index (no index.faiss and chunks.json); "
                           f"give an index folder, or a new folder without --append")
    if not args.append and not args.force and _has_index(args.out):
        raise TenfoldError(f"{args.out} already holds an index: --append to add {args.doc} to it, "
                           f"--force to replace it")
    # On stderr and only on a terminal (tenfold.cli), so --json keeps it and stdout stays the result.
    bar = progress_bar(remaining=True, transient=True)
    with _warnings_as_lines(), bar:
        job = bar.add_task(f"chunking {Path(args.doc).name}", total=None)

        def embedded(done, total):
            bar.update(job, description=f"embedding {Path(args.doc).name}", completed=done, total=total)

        if args.append and _has_index(args.out):
            retriever = Retriever.load(args.out, device=args.device)
            wanted = args.embedder and (DEFAULT_EMBEDDER if args.embedder.lower() == DEFAULT_EMBEDDER else args.embedder)
            if wanted and wanted != retriever.embedder.name:
                raise TenfoldError(f"{args.out} was built with the embedder {retriever.embedder.name}, "
                                   f"not {args.embedder}")
            if args.max_seq_length and args.max_seq_length != retriever.embedder.max_seq_length:
                raise TenfoldError(f"{args.out} was built with max_seq_length {retriever.embedder.max_seq_length}, "
                                   f"not {args.max_seq_length}")
            if args.kind and args.kind != retriever.index.kind:
                raise TenfoldError(f"{args.out} is a {retriever.index.kind} index, not {args.kind}: an index keeps its "
                                   "kind (build a new one with --force to change it)")
        else:
            retriever = Retriever(Embedder(args.embedder, max_seq_length=args.max_seq_length, device=args.device),
                                  kind=args.kind or "flat",
                                  words=args.words, overlap=args.overlap)
        n = retriever.add_document(text, args.words, args.overlap, source=str(args.doc), progress=embedded)
        record = retriever.check_document(text, str(args.doc), args.out)
        if n:
            retriever.save(args.out)
    if args.json:
        print_json({"added_chunks": n, "index_chunks": len(retriever), "source": record})
        return 0
    if not n:
        print(f"{args.doc} is already in {args.out} (sha256 {record['sha256'][:12]}): nothing added")
        return 0
    c = record["chunker"]
    print(f"indexed {n} chunks of at most {c['words']} words and {c['max_tokens']} tokens ({c['tokenizer']}) from "
          f"{args.doc} into {args.out} ({retriever.index.kind}, {len(retriever)} chunks in all); "
          f"{100 * record['share_embedded']:.1f}% of the text embedded")
    if record.get("unknown_chars"):
        print(f"warning: {record['unknown_chars']} of {record['nonspace_chars']} non-space characters are unknown "
              f"to {retriever.embedder.name}; ask with --retriever bm25 (reads any script)", file=sys.stderr)
    return 0


def _ask(args) -> int:
    from tenfold.data import read_text
    from tenfold.models import load_lm
    from tenfold.retrieval import Reader, Retriever

    if args.k < 1:
        raise TenfoldError(f"--k must be >= 1 (got {args.k})")
    if not args.doc and not args.index:
        raise TenfoldError("give the document (--doc), an index (--index), or both")
    with _warnings_as_lines():
        text = read_text(args.doc) if args.doc else None
        retriever = None
        if args.index:
            retriever = Retriever.load(args.index, method=args.retriever, device=args.device)
            if text is not None:
                retriever.check_document(text, str(args.doc), str(args.index))
            else:
                text = "\n\n".join(retriever.index.texts)
        elif args.mode != "long":
            retriever = Retriever(method=args.retriever, device=args.device)
            retriever.add_document(text, source=str(args.doc))
        model, tok = load_lm(args.model, quantize=None, device=args.device)
        answer = Reader(model, tok, window=args.window).ask(args.question, text, retriever, args.mode, args.k)
    if args.json:
        print_json(answer.as_dict())
    else:
        print(answer.answer)
    return 0
