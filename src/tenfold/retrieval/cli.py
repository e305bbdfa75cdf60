"""``tenfold rag index|ask``: retrieval over a long document, then a reader under a token budget (Xu et al.)."""
from __future__ import annotations

import json

from tenfold.errors import TenfoldError


def add_commands(sub) -> None:
    p = sub.add_parser("rag", help="retrieval meets long context: index a document, ask questions (long | retrieve | both)")
    verbs = p.add_subparsers(dest="rag_verb", required=True, metavar="{index,ask}")
    q = verbs.add_parser("index", help="chunk, embed and index a document into a directory")
    q.add_argument("doc", help="a UTF-8 text file")
    q.add_argument("--out", required=True, help="directory for index.faiss and chunks.json")
    q.add_argument("--words", type=int, default=300, help="words per chunk (default 300, as in the paper)")
    q.add_argument("--overlap", type=int, default=0)
    q.add_argument("--kind", default="flat", choices=["flat", "hnsw", "ivf"], help="exact (flat) or approximate index")
    q.add_argument("--embedder", default=None, help="sentence-transformers model (default: bundled all-MiniLM-L6-v2)")
    q.set_defaults(func=_index)
    q = verbs.add_parser("ask", help="answer a question about a document")
    q.add_argument("question")
    q.add_argument("--doc", required=True, help="the document (a UTF-8 text file)")
    q.add_argument("--index", default=None, help="an index built by `tenfold rag index` (default: index --doc now)")
    q.add_argument("--mode", default="retrieve", choices=["long", "retrieve", "both"])
    q.add_argument("--k", type=int, default=5, help="chunks to retrieve (default 5)")
    q.add_argument("--window", type=int, default=2048, help="context window in tokens, prompt + answer (default 2048)")
    q.add_argument("--model", default=None, help="reader LM (default: the bundled SmolLM2)")
    q.add_argument("--json", action="store_true", help="print answer, chunks (text, score) and prompt_tokens as JSON")
    q.set_defaults(func=_ask)


def _index(args) -> int:
    from tenfold.data import read_text
    from tenfold.retrieval import Embedder, Retriever

    text = read_text(args.doc)
    try:
        retriever = Retriever(Embedder(args.embedder), kind=args.kind)
        n = retriever.add_document(text, args.words, args.overlap, source=str(args.doc))
    except ValueError as exc:
        raise TenfoldError(str(exc)) from None
    out = retriever.save(args.out)
    print(f"indexed {n} chunks of {args.words} words from {args.doc} into {out} ({args.kind})")
    return 0


def _ask(args) -> int:
    from tenfold.data import read_text
    from tenfold.models import load_lm
    from tenfold.retrieval import Reader, Retriever

    if args.k < 1:
        raise TenfoldError(f"--k must be >= 1 (got {args.k})")
    text = read_text(args.doc)
    retriever = None
    if args.mode != "long":
        if args.index:
            retriever = Retriever.load(args.index)
        else:
            retriever = Retriever()
            retriever.add_document(text, source=str(args.doc))
    model, tok = load_lm(args.model)
    answer = Reader(model, tok, window=args.window).ask(args.question, text, retriever, args.mode, args.k)
    if args.json:
        print(json.dumps(answer.as_dict()))
    else:
        print(answer.answer)
    return 0
