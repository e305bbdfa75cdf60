"""The multimodal foundation: a procedural visual world, a small CLIP and a small LLaVA-style VLM, trained offline.

``world`` (scenes, rendering, exact parser), ``clip`` (transformers' CLIPModel, small config, contrastive training),
``questions`` (questions with exact answers), ``vlm`` (CLIP vision tower + projector + causal LM, ``<image>``
placeholders), ``vlm_eval`` (held-out accuracy per question kind). Serving: ``tenfold serve --vlm DIR``.
"""
from tenfold.vision.questions import KINDS, Question, questions
from tenfold.vision.vlm import IMAGE_TOKEN, VisionLanguageModel, build_vlm, train_vlm
from tenfold.vision.world import (COLOURS, HELD_OUT, SHAPES, Obj, Scene, parse, render, same_objects, sample_scene,
                                  scenes, write_dataset)

__all__ = ["COLOURS", "HELD_OUT", "IMAGE_TOKEN", "KINDS", "SHAPES", "Obj", "Question", "Scene", "VisionLanguageModel",
           "build_vlm", "parse", "questions", "render", "same_objects", "sample_scene", "scenes", "train_vlm",
           "write_dataset"]
