"""``edgebench predict`` on image files of any size and mode, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from edgebench.cli import cli
from edgebench.runtime import load_image
from tests.conftest import JPEG_ROOT, write_bomb_png


def test_load_image_any_size_and_mode(tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 200, 4), dtype=np.uint8), "RGBA").save(
        big
    )
    gray = tmp_path / "gray.bmp"
    Image.fromarray(np.full((17, 40), 128, dtype=np.uint8), "L").save(gray)
    for path in (big, gray, JPEG_ROOT / "test" / "cat" / "0000.jpg"):
        img = load_image(path)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (load_image(gray) == 128).all()


def test_predict_prints_top_k_and_json(tiny_model_path, tmp_path):
    images = [str(JPEG_ROOT / "test" / c / "0001.jpg") for c in ("ship", "frog")]
    odd = tmp_path / "odd.png"
    Image.open(images[0]).resize((77, 51)).convert("P").save(odd)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["predict", *images, str(odd), "--model", str(tiny_model_path), "--top-k", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(images[0]) and lines[0].count("%") == 2

    result = runner.invoke(cli, ["predict", *images, "--model", str(tiny_model_path), "--json"])
    parsed = json.loads(result.output)
    assert [p["image"] for p in parsed] == images
    probs = [r["probability"] for r in parsed[0]["top_k"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_predict_bad_input_is_one_line(tiny_model_path, tmp_path):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    not_keras = tmp_path / "weights.keras"
    not_keras.write_text("hello")
    cat = str(JPEG_ROOT / "test" / "cat" / "0000.jpg")
    runner = CliRunner()
    cases = [
        (
            ["predict", str(write_bomb_png(tmp_path / "bomb.png")), "--model", str(tiny_model_path)],
            "too large",
        ),
        (
            ["predict", str(write_bomb_png(tmp_path / "warn.png", 10000)), "--model", str(tiny_model_path)],
            "too large",
        ),
        (["predict", cat, "--model", str(not_keras)], "not a Keras archive"),
        (["predict", str(not_image), "--model", str(tiny_model_path)], "not a readable image"),
        (["predict", str(tmp_path / "missing.jpg"), "--model", str(tiny_model_path)], "image not found"),
        (
            ["predict", str(JPEG_ROOT / "test" / "cat" / "0000.jpg"), "--model", str(tmp_path / "m.keras")],
            "model file not found",
        ),
        (
            ["predict", str(JPEG_ROOT / "test" / "cat" / "0000.jpg"), "--model", str(not_image)],
            "unknown model format",
        ),
    ]
    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
