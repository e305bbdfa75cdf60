"""The multimodal foundation: a procedural visual world, a small CLIP and a small LLaVA-style VLM, trained offline.

``world`` (scenes, rendering, exact parser), ``clip`` (transformers' CLIPModel, small config, contrastive training),
``questions`` (questions with exact answers), ``vlm`` (CLIP vision tower + projector + causal LM, ``<image>``
placeholders), ``vlm_eval`` (held-out accuracy per question kind). Serving: ``tenfold serve --vlm DIR``.
"""
import lazy_loader as _lazy

# The public API, imported on first use: `import tenfold.vision` (and building the CLI) stays cheap.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "questions": ["KINDS", "Question", "questions"],
    "vlm": ["IMAGE_TOKEN", "VisionLanguageModel", "build_vlm", "train_vlm"],
    "world": ["COLOURS", "HELD_OUT", "SHAPES", "Obj", "Scene", "parse", "render", "same_objects", "sample_scene", "scenes", "write_dataset"],
})
