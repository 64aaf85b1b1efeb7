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
export EDGEBENCH_CACHE ?= $(CURDIR)/runs/.cache

.PHONY: setup train export bench all smoke bundle test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

train: setup
	$(EB) train --preset $(PRESET) --data $(DATA) --weights $(WEIGHTS) --out $(RUN)

export: setup
	$(EB) export --model $(RUN)/model.keras --data $(DATA) --out $(RUN)/export

bench: setup
	$(EB) bench --export $(RUN)/export --reference $(RUN)/model.keras --data $(DATA) --out $(RUN)/bench

bundle: setup
	$(EB) bundle --export $(RUN)/export --format $(FORMAT) --out dist/$(NAME)-$(FORMAT)

all: train export bench

smoke: setup
	$(MAKE) all PRESET=smoke NAME=smoke

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs dist build *.egg-info .pytest_cache .ruff_cache
