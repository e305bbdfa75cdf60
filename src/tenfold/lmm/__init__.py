"""A probing harness for vision-language models (Yang et al. 2023, "The Dawn of LMMs: Preliminary Explorations with
GPT-4V(ision)").

``referring``: visual referring prompts (arrow, box, circle, point, crop, set-of-marks, text coordinates);
``suite``: the probe-suite format (JSON / YAML) with validation; ``world_suite``: a suite generated from the visual
world with exact answers; ``scoring``: exact / contains / all_of / numeric / choice / judge rules; ``prompts``: chat
messages and the paper's prompting techniques; ``backends``: the local VLM or any OpenAI-compatible vision endpoint;
``runner``: concurrency, rate limit, resumable answer cache (retries: the openai SDK's); ``gallery``: the HTML page of a run; ``cli``:
``tenfold lmm suite|run``; ``experiment``: ``lmm-probing``.
"""
