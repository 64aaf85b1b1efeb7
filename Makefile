# edgebench: `make all` runs train -> export -> bench; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EB := $(BIN)/edgebench

# Local copies of the data and weights when ../shared is beside the repo; the standard Keras sources otherwise.
SHARED ?= ../shared
DATA ?= $(if $(wildcard $(SHARED)/data/cifar10-jpeg),$(SHARED)/data/cifar10-jpeg,keras)
WEIGHTS ?= $(if $(wildcard $(SHARED)/weights/resnet50_imagenet_notop.weights.h5),$(SHARED)/weights/resnet50_imagenet_notop.weights.h5,imagenet)
PRESET ?= cpu
NAME ?= $(PRESET)
RUN := runs/$(NAME)
FORMAT ?= tflite-int8
TRAIN_ARGS ?=
EXPORT_ARGS ?=
BENCH_ARGS ?=
export EDGEBENCH_CACHE ?= $(CURDIR)/runs/.cache

.PHONY: setup train export bench crosscheck tune all all-release release-model release-plan release-continue pack-model gpu-payload gpu-rehearsal results-doc cli-doc smoke bundle device-arm64 test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

train: setup
	$(EB) train --preset $(PRESET) --data $(DATA) --weights $(WEIGHTS) --out $(RUN) $(TRAIN_ARGS)

export: setup
	$(EB) export --model $(RUN)/model.keras --data $(DATA) --out $(RUN)/export $(EXPORT_ARGS)

bench: setup
	$(EB) bench --export $(RUN)/export --reference $(RUN)/model.keras --data $(DATA) --out $(RUN)/bench $(BENCH_ARGS)

# The fastest artifact that keeps accuracy on this machine, written into the export as <format>-tuned.
tune: setup
	$(EB) tune --model $(RUN)/model.keras --export $(RUN)/export --data $(DATA) --out $(RUN)/tune

# The bench report's batch-1 p50s beside a bare runtime loop, Polygraphy and litert-benchmark (fresh processes).
crosscheck: setup
	$(EB) crosscheck --report $(RUN)/bench/report.json --threads 2 --out $(RUN)/bench/crosscheck.md

bundle: setup
	$(EB) bundle --export $(RUN)/export --format $(FORMAT) --out dist/$(NAME)-$(FORMAT)

all: train export bench

# The released model (models/release, packed with its provenance): rebuilt and checked, then exported and
# benched without training.
release-model: setup
	$(EB) fetch-model --name release --out runs/release/model.keras

all-release: release-model
	$(MAKE) export bench NAME=release

# More epochs for the released model: continues it (preset release-continue, 100 min) and packs the result
# over models/release, its provenance chained to the model it continued (commit models/ afterwards).
release-continue: release-model
	$(MAKE) train PRESET=release-continue NAME=release-continue
	$(EB) pack-model --run runs/release-continue --out models/release \
		--command "make release-continue"

# The released model's long training plan (docs/design/training-plan.md): one run of RUN_MINUTES continuing the
# plan packed in models/release-plan (made from the released model and measured throughputs on the first run);
# its decision rule may replace models/release. Run it from its own git worktree, nothing else on the machine;
# commit models/ afterwards.
RUN_MINUTES ?= 100
release-plan: release-model
	$(EB) train-plan --run-minutes $(RUN_MINUTES) --init-from runs/release/model.keras --data $(DATA) \
		--weights $(WEIGHTS) --command "make release-plan RUN_MINUTES=$(RUN_MINUTES)"

# The GPU call's payload (docs/design/gpu.md): train + test JPEGs and the base weights, one xz file each, and the
# wheels of keras and what it needs beyond the device's image (pure ones, and optree for its Python 3.12).
GPU_PAYLOAD ?= runs/gpu-payload
GPU_WHEELS := keras==3.15.1 namex==0.1.0 optree==0.20.0 absl-py==2.5.1 rich==15.0.0 markdown-it-py==4.3.0 \
	mdurl==0.1.2 pygments==2.21.0 packaging==26.4 typing-extensions==4.16.0
gpu-payload: setup
	$(EB) gpu-payload --data $(DATA) --weights $(WEIGHTS) --out $(GPU_PAYLOAD)
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux_2_28_x86_64 -d $(GPU_PAYLOAD)/wheels $(GPU_WHEELS)

# The device script on this CPU under Keras/JAX, on 200 train and 100 test images at 64 px (minutes).
gpu-rehearsal: setup
	KERAS_BACKEND=jax $(BIN)/python train/portable/device_run.py --payload $(GPU_PAYLOAD) --out runs/gpu-rehearsal \
		--image-size 64 --batch-size 16 --train-per-class 20 --test-per-class 10 --phase2-epochs 1 --minutes 20

# An emulated aarch64 device to bench on (docs/design/arm64.md): Debian 12's arm64 Python and the runtimes'
# aarch64 wheels under qemu-user as CPU=cortex-a72|cortex-a76|neoverse-n1|max; downloads cached in EDGEBENCH_CACHE.
CPU ?= cortex-a72
device-arm64: setup
	$(EB) device arm64 --cpu $(CPU) --out runs/devices/arm64-$(CPU)

# The dated results page of a benched run and the README's headline table (the released model's by default).
results-doc: setup
	$(EB) results-doc --run runs/$(or $(RESULTS),release) --readme README.md

# docs/cli.md from every command's --help.
cli-doc: setup
	$(BIN)/python -m edgebench.cli_docs docs/cli.md

# Pack a finished run for the repository (models/$(NAME)): bfloat16 + lzma weights, sha256s, provenance.
pack-model: setup
	$(EB) pack-model --run $(RUN) --out models/$(NAME)

# The same pipeline on a tiny preset: a few hundred images, small calibration/parity sets, short latency
# caps, and a loose gate (a barely trained model on 200 test images: its int8 drop is mostly noise).
smoke: setup
	$(MAKE) all bundle PRESET=smoke NAME=smoke EXPORT_ARGS="--calib-size 100 --parity-images 50" \
		BENCH_ARGS="--max-drop 10 --test-per-class 20 --threads 2 --batch-sizes 1,8 --rounds 1 --min-samples 200 --latency-time-cap 2 --throughput-time-cap 1"

test: setup
	$(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs dist build *.egg-info .pytest_cache .ruff_cache
