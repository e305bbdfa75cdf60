"""GPT-4V-style probing: visual referring prompts (checked on pixels), the suite format, scoring rules."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from tenfold.errors import TenfoldError
from tenfold.lmm.referring import (POINTER_COLOURS, POINTERS, arrow_geometry, crop, draw_arrow, draw_box,
                                   draw_circle, draw_marks, draw_point, mark_positions, refer)
from tenfold.lmm.scoring import first_number, score, words
from tenfold.lmm.suite import Sample, load_suite, parse_suite, read_images, save_suite

CYAN = np.array(POINTER_COLOURS["cyan"])
BOX = (40.0, 50.0, 70.0, 80.0)


def canvas(size=128):
    img = Image.new("RGB", (size, size), (0, 0, 0))
    img.paste((200, 30, 30), tuple(int(v) for v in BOX))  # the "object" fills the box
    return img


def cyan(img) -> np.ndarray:
    return (np.asarray(img, dtype=int) == CYAN).all(-1)


def test_box_circle_point_are_drawn_around_or_on_the_region():
    base = canvas()
    inside = (slice(51, 79), slice(41, 69))
    boxed = cyan(draw_box(base, BOX))
    assert boxed[47, 55] and boxed[82, 55] and boxed[65, 37] and boxed[65, 72]  # all four sides, 2 px out
    assert not boxed[49:82, 39:72].any() and not boxed[10, 10]
    circled = cyan(draw_circle(base, BOX))
    ys, xs = np.nonzero(circled)
    r = np.hypot((xs - 55) / 15, (ys - 65) / 15)
    assert circled.sum() > 50 and r.min() > 1.42 and r.max() < 2.2  # a ring clear of the region's corners
    assert {np.sign(v) for v in xs - 55} == {np.sign(v) for v in ys - 65} == {-1, 0, 1}
    assert not circled[inside].any()
    dotted = cyan(draw_point(base, BOX))
    ys, xs = np.nonzero(dotted)
    assert dotted[65, 55] and abs(ys.mean() - 65) < 1 and abs(xs.mean() - 55) < 1
    assert np.array_equal(np.asarray(base), np.asarray(canvas()))  # the input is never drawn on


def test_arrow_points_at_the_region_from_the_side_with_room():
    base = canvas()
    tail, tip = arrow_geometry(base, BOX)
    # most room is on the right (58 px) or below (48 px): the arrow comes from the right, its tip at the right edge
    assert tip[0] == pytest.approx(71) and 50 <= tip[1] <= 80 and tail[0] > tip[0]
    drawn = cyan(draw_arrow(base, BOX))
    assert drawn[int(tip[1]), int(tip[0]) + 1: int(tip[0]) + 4].any()  # the head at the tip
    assert drawn[int(tail[1]), int(tail[0]) - 2]  # the shaft reaches back to the tail
    assert not drawn[51:79, 41:69].any()
    # a region at the right edge gets its arrow from the left
    tail, tip = arrow_geometry(base, (100, 50, 127, 80))
    assert tail[0] < tip[0] == pytest.approx(99)


def test_crop_marks_and_coordinates():
    base = canvas()
    region = crop(base, BOX, margin=0)
    assert region.size == (30, 30) and np.all(np.asarray(region) == (200, 30, 30))
    boxes = [BOX, (90.0, 10.0, 110.0, 30.0)]
    marked = draw_marks(base, boxes)
    for x, y in mark_positions(base, boxes):
        assert cyan(marked)[int(y) + 1, int(x) + 1]
    images, phrase = refer(base, boxes[1], "marks", boxes=boxes)
    assert phrase == "object number 2" and len(images) == 1
    images, phrase = refer(base, BOX, "crop")
    assert len(images) == 2 and images[1].size == base.size and "second image" in phrase
    images, phrase = refer(base, BOX, "coordinates")
    assert np.array_equal(np.asarray(images[0]), np.asarray(base)) and "x 40-70, y 50-80" in phrase
    for pointer in POINTERS:
        images, phrase = refer(base, BOX, pointer, boxes=boxes)
        assert phrase and all(im.size == base.size for im in images)


def test_bad_regions_and_pointers_are_clear_errors():
    base = canvas()
    with pytest.raises(TenfoldError, match="not inside the 128x128 image"):
        draw_box(base, (100, 100, 140, 120))
    with pytest.raises(TenfoldError, match="four finite numbers"):
        draw_box(base, (1, 2, math.nan, 5))
    with pytest.raises(TenfoldError, match="x0 < x1"):
        draw_point(base, (50, 50, 40, 60))
    with pytest.raises(TenfoldError, match="unknown pointer"):
        refer(base, BOX, "laser")
    with pytest.raises(TenfoldError, match="unknown pointer colour"):
        draw_box(base, BOX, colour="red")
    with pytest.raises(TenfoldError, match="must be one of the marked"):
        refer(base, BOX, "marks", boxes=[(0, 0, 10, 10)])


def sample(**kw):
    base = {"id": "s1", "category": "counting", "prompt": "How many?", "answer": "3"}
    return {**base, **kw}


@pytest.mark.parametrize("bad,message", [
    ({"answer": None}, "answer"),
    ({"scoring": "fuzzy"}, "scoring"),
    ({"scoring": "choice", "choices": ["left", "right"], "answer": "up"}, "not one of the choices"),
    ({"scoring": "choice"}, "needs 'choices'"),
    ({"scoring": "numeric", "answer": "many"}, "needs a number"),
    ({"pointer": "laser"}, "unknown pointer"),
    ({"prompt": "<image> and <image>?", "images": ["a.png"]}, "2 <image> placeholder"),
    ({"colour": "red"}, "colour"),
    ({"scoring": "all_of"}, "non-empty list"),
    ({"tolerance": -1}, "tolerance"),
])
def test_suite_validation_names_the_sample_and_field(bad, message):
    data = {"name": "t", "samples": [sample(id="ok"), sample(id="broken", **bad)]}
    with pytest.raises(TenfoldError, match="suite.json") as err:
        parse_suite(data, "suite.json")
    text = str(err.value)
    assert "samples[1] (id 'broken')" in text and message in text and "\n" not in text


def test_suite_files_load_save_and_fail_clearly(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    yaml_text = ("name: mine\nsamples:\n  - id: q1\n    category: spatial\n    images: [a.png]\n"
                 "    prompt: Left or right?\n    answer: left\n    scoring: choice\n    choices: [left, right]\n"
                 "    examples:\n      - {images: [a.png], prompt: 'Left or right?', answer: right}\n")
    (tmp_path / "s.yaml").write_text(yaml_text)
    suite = load_suite(tmp_path / "s.yaml")
    assert suite.samples[0].choices == ["left", "right"] and suite.samples[0].examples[0].answer == "right"
    assert read_images(suite.samples[0].images, tmp_path)[0].size == (32, 32)
    again = load_suite(save_suite(suite, tmp_path / "copy.json"))
    assert again == suite
    (tmp_path / "dup.json").write_text(json.dumps({"name": "d", "samples": [sample(), sample()]}))
    with pytest.raises(TenfoldError, match="two samples have the id 's1'"):
        load_suite(tmp_path / "dup.json")
    (tmp_path / "missing.json").write_text(json.dumps({"name": "m", "samples": [sample(images=["nope.png"])]}))
    with pytest.raises(TenfoldError, match="no image file 'nope.png'"):
        load_suite(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TenfoldError, match="not valid JSON"):
        load_suite(tmp_path / "bad.json")
    with pytest.raises(TenfoldError, match="no suite file"):
        load_suite(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("name: x\nsamples: [{id: a, prompt: What?, b}\n")
    with pytest.raises(TenfoldError, match="not valid YAML"):
        load_suite(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(TenfoldError, match="a suite is a mapping"):
        load_suite(tmp_path / "list.yaml")
    with pytest.raises(TenfoldError, match="bad data URL"):
        read_images(["data:image/png;base64,@@@"], tmp_path)


def test_scoring_rules():
    def s(**kw):
        return Sample.model_validate(sample(**kw))

    assert words("Three red STARS, 4.5!") == ["3", "red", "stars", "4.5"] and first_number("about five") == 5
    assert score(s(answer="red", scoring="exact"), "Red.") and score(s(answer="red"), "red star")
    assert not score(s(answer="red"), "It is red") and not score(s(answer="red"), "")
    assert score(s(answer="red", scoring="contains"), "It is red.") and not score(s(answer="red", scoring="contains"),
                                                                                  "reddish")
    assert score(s(answer=["red star", "blue circle"], scoring="all_of"), "A blue circle and a red star")
    assert not score(s(answer=["red star", "blue circle"], scoring="all_of"), "a red star")
    assert score(s(answer="3", scoring="numeric"), "There are three objects.")
    assert not score(s(answer="3", scoring="numeric"), "four") and not score(s(answer="3", scoring="numeric"), "none")
    assert score(s(answer="3", scoring="numeric", tolerance=1), "4")
    choice = s(answer="left", scoring="choice", choices=["left", "right"])
    assert score(choice, "It is on the left.") and not score(choice, "right, not left") and not score(choice, "up")
    judged = s(answer="a cat", scoring="judge")
    assert score(judged, "a kitten", judge=lambda messages: "Yes.")
    assert not score(judged, "a dog", judge=lambda messages: "no")
    with pytest.raises(TenfoldError, match="judge"):
        score(judged, "a kitten")


def test_world_suite_has_exact_ground_truth(tmp_path):
    from tenfold.lmm.world_suite import world_suite
    from tenfold.vision.world import Scene, bounding_box, parse, render

    suite = load_suite(world_suite(tmp_path / "suite", n=2, size=96))
    cats = {s.category for s in suite.samples}
    assert cats == {"captioning", "attributes", "counting", "spatial", "text", "referring", "few-shot"}
    referring = [s for s in suite.samples if s.category == "referring"]
    assert {s.pointer for s in referring} == set(POINTERS) and len(referring) == 2 * len(POINTERS)
    for s in referring:
        scene = Scene.from_dict(s.meta["scene"])
        target = scene.objects[s.meta["target"]]
        assert s.answer == target.colour and len({o.colour for o in scene.objects}) == len(scene.objects)
        if s.pointer == "coordinates":
            image = read_images(s.images, tmp_path / "suite")[0]
            assert np.array_equal(np.asarray(image), np.asarray(render(scene, 96)))
            x0, y0, x1, y1 = (round(v) for v in bounding_box(target, 96))
            assert f"x {x0}-{x1}, y {y0}-{y1}" in s.prompt
    for s in suite.samples:
        if s.category == "counting":
            assert int(s.answer) == len(parse(read_images(s.images, tmp_path / "suite")[0]).objects)
    shots = [s for s in suite.samples if s.category == "few-shot"]
    assert all(len(s.examples) == 2 for s in shots)


def test_lmm_suite_into_a_suite_folder_refuses_or_replaces_it_whole(tmp_path, capsys):
    """``lmm suite --out`` is all or nothing, like ``vision world``: a folder that holds a suite is refused (``--force``
    replaces it, leaving no image of the old suite), and an interrupted run leaves nothing behind."""
    from unittest import mock

    from tenfold.cli import main

    out = tmp_path / "suite"
    assert main(["lmm", "suite", "--out", str(out), "--n", "2", "--size", "64"]) == 0
    many = len(list((out / "images").iterdir()))
    assert main(["lmm", "suite", "--out", str(out), "--n", "1", "--size", "64"]) == 1
    assert "already holds a suite" in capsys.readouterr().err
    assert main(["lmm", "suite", "--out", str(out), "--n", "1", "--size", "64", "--force"]) == 0
    images = {p.name for p in (out / "images").iterdir()}
    assert len(images) < many and {i.split("/")[-1] for s in load_suite(out / "suite.json").samples
                                   for i in s.images} <= images
    referenced = {i.split("/")[-1] for s in load_suite(out / "suite.json").samples for i in s.images}
    assert images == referenced | {e.split("/")[-1] for s in load_suite(out / "suite.json").samples
                                   for ex in s.examples for e in ex.images}
    with mock.patch("tenfold.lmm.world_suite.save_suite", side_effect=KeyboardInterrupt):
        assert main(["lmm", "suite", "--out", str(tmp_path / "cut"), "--n", "1", "--size", "64"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite"]
