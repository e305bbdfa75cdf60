"""The multimodal foundation (issue: procedural visual world, small CLIP, small VLM). Landed so far: the world."""
from tenfold.vision.world import (COLOURS, HELD_OUT, SHAPES, Obj, Scene, parse, render, same_objects, sample_scene,
                                  scenes, write_dataset)

__all__ = ["COLOURS", "HELD_OUT", "SHAPES", "Obj", "Scene", "parse", "render", "same_objects", "sample_scene", "scenes",
           "write_dataset"]
