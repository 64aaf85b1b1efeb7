"""A packed model (models/<name>/) rebuilds through `edgebench pack-model` / `fetch-model`, and a damaged
pack is refused with one line before anything is written."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

from edgebench.cli import cli
from edgebench.train.model import load_model
from edgebench.train.packing import PACK_MANIFEST, pack_model


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_model_path):
    """A run directory (model + the metrics a training run writes) packed into three parts by the CLI."""
    root = tmp_path_factory.mktemp("pack")
    run = root / "runs" / "tiny"
    run.mkdir(parents=True)
    shutil.copy(tiny_model_path, run / "model.keras")
    metrics = {
        "created": "2026-12-03T00:00:00+00:00",
        "preset": "smoke",
        "test_images": 200,
        "test_accuracy": {"phase1": 0.5, "final": 0.6},
        "wall_time_s": 90.0,
        "code_commit": "0" * 40,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    result = CliRunner().invoke(
        cli, ["pack-model", "--run", str(run), "--out", str(root / "models" / "tiny")]
    )
    assert result.exit_code == 0, result.output
    # The CLI packs into one part (the tiny model is small); repack through the function into three.
    manifest = json.loads((root / "models" / "tiny" / PACK_MANIFEST).read_text())
    small = pack_model(
        run / "model.keras",
        root / "models" / "tiny",
        manifest["provenance"],
        part_bytes=manifest["packed_bytes"] // 3 + 1,
    )
    return root, small


def _fetch(root, out):
    return CliRunner().invoke(
        cli, ["fetch-model", "--name", "tiny", "--models", str(root / "models"), "--out", str(out)]
    )


def test_pack_records_parts_and_provenance(packed):
    root, manifest = packed
    folder = root / "models" / "tiny"
    assert [p["file"] for p in manifest["parts"]] == ["weights.xz.000", "weights.xz.001", "weights.xz.002"]
    for part in manifest["parts"]:
        assert hashlib.sha256((folder / part["file"]).read_bytes()).hexdigest() == part["sha256"]
    sums = (folder / "SHA256SUMS").read_text().split()
    assert sums == [x for p in manifest["parts"] for x in (p["sha256"], p["file"])]
    stored = {t["path"]: t["stored"] for t in manifest["tensors"]}
    assert stored["conv1/kernel"] == "bfloat16" and stored["conv0/kernel"] == "float32"  # 4,608 vs 432
    assert stored["bn1/moving_variance"] == "float32"
    prov = manifest["provenance"]
    assert prov["test_accuracy"]["final"] == 0.6 and prov["code_commit"] == "0" * 40
    assert prov["command"] == "make train PRESET=smoke NAME=tiny" and prov["rebuild"].endswith("--name tiny")
    assert "flags" in prov["cpu"] or "model" in prov["cpu"]


def test_fetch_rebuilds_the_packed_weights(packed, tiny_model_path, test_batch, tmp_path):
    root, _ = packed
    out = tmp_path / "rebuilt" / "model.keras"
    result = _fetch(root, out)
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    original, rebuilt = load_model(tiny_model_path), load_model(out)
    # The trained file was saved compiled; its rebuild carries no compile config (so no optimizer state).
    configs = [json.loads(zipfile.ZipFile(p).read("config.json")) for p in (tiny_model_path, out)]
    assert configs[0].get("compile_config") and not configs[1].get("compile_config")
    for a, b in zip(original.weights, rebuilt.weights, strict=True):
        a, b = np.asarray(a.numpy()), np.asarray(b.numpy())
        # Large tensors come back bfloat16-rounded, small ones exactly.
        expected = a.astype(ml_dtypes.bfloat16).astype(np.float32) if a.size >= 4096 else a
        np.testing.assert_array_equal(b, expected)
    x, _ = test_batch
    p0, p1 = original.predict(x, verbose=0), rebuilt.predict(x, verbose=0)
    assert np.abs(p0 - p1).max() < 0.02 and (p0.argmax(1) == p1.argmax(1)).mean() > 0.97


@pytest.mark.parametrize("damage", ["flip", "missing", "truncated-manifest"])
def test_damaged_pack_is_refused(packed, tmp_path, damage):
    root, manifest = packed
    copy = tmp_path / "models" / "tiny"
    shutil.copytree(root / "models" / "tiny", copy)
    part = copy / manifest["parts"][1]["file"]
    if damage == "flip":
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0xFF
        part.write_bytes(bytes(data))
    elif damage == "missing":
        part.unlink()
    else:
        (copy / PACK_MANIFEST).write_text((copy / PACK_MANIFEST).read_text()[:100])
    out = tmp_path / "out" / "model.keras"
    result = _fetch(tmp_path, out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert {"flip": "sha256", "missing": "missing", "truncated-manifest": "not valid JSON"}[
        damage
    ] in result.output
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing half-written


def test_pack_over_an_unreadable_pack_is_refused(packed, tmp_path):
    """pack-model reads the manifest it replaces (a continued model's lineage): a damaged one is a one-line
    error, and the pack there is left as it was."""
    root, _ = packed
    target = tmp_path / "models" / "tiny"
    shutil.copytree(root / "models" / "tiny", target)
    (target / PACK_MANIFEST).write_text((target / PACK_MANIFEST).read_text()[:100])
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    result = CliRunner().invoke(
        cli, ["pack-model", "--run", str(root / "runs" / "tiny"), "--out", str(target)]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "packed model manifest is not valid JSON" in result.output
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def _rewrite_parts(copy, manifest: dict, parts: list[tuple[str, bytes]]) -> None:
    for old in manifest["parts"]:
        (copy / old["file"]).unlink()
    for name, data in parts:
        (copy / name).write_bytes(data)
    entries = [{"file": n, "bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in parts]
    (copy / PACK_MANIFEST).write_text(json.dumps({**manifest, "parts": entries}))


def test_a_decompression_bomb_is_refused_at_the_declared_size(packed, tmp_path):
    """A part whose sha256 matches but which inflates far past the tensors the manifest declares (here
    256 MiB from a few dozen KB) is refused once decompression passes the declared size."""
    import lzma

    root, manifest = packed
    copy = tmp_path / "models" / "tiny"
    shutil.copytree(root / "models" / "tiny", copy)
    squeezer = lzma.LZMACompressor(preset=1)
    bomb = b"".join(squeezer.compress(bytes(1 << 24)) for _ in range(16)) + squeezer.flush()
    assert len(bomb) < 1 << 20
    _rewrite_parts(copy, manifest, [("weights.xz.000", bomb)])
    result = _fetch(tmp_path, tmp_path / "out" / "model.keras")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "inflates past the" in result.output and "bytes its manifest declares" in result.output


@pytest.mark.parametrize("name", ["../weights.xz.000", "/etc/hostname"])
def test_a_pack_part_outside_the_pack_is_refused(packed, tmp_path, name):
    root, manifest = packed
    copy = tmp_path / "models" / "tiny"
    shutil.copytree(root / "models" / "tiny", copy)
    parts = [{**p, "file": name if i == 0 else p["file"]} for i, p in enumerate(manifest["parts"])]
    (copy / PACK_MANIFEST).write_text(json.dumps({**manifest, "parts": parts}))
    result = _fetch(tmp_path, tmp_path / "out" / "model.keras")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "absolute path" in result.output or "leaves its folder" in result.output
