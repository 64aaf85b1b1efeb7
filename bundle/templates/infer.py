#!/usr/bin/env python3
"""Classify images with this bundle's model, or --selftest it (python infer.py --help)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

try:
    from edgebench_runtime.cli import main

    code = main(bundle_dir=HERE)
except ModuleNotFoundError as exc:  # numpy or Pillow (the runtime itself is reported by main)
    print(
        f"error: Python module {exc.name} not installed: pip install -r {HERE / 'requirements.txt'}",
        file=sys.stderr,
    )
    code = 2
sys.exit(code)
