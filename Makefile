# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch/torchvision pair; override for another platform, e.g.
#   make test TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup demo test benchmark clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	@# albumentations installs opencv-python-headless, which shares the cv2 package with the
	@# contrib build and would hide cv2.ximgproc (selective search): reinstall contrib last.
	$(PY) -m pip install --quiet --no-deps --force-reinstall \
		"opencv-contrib-python-headless==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opencv-contrib-python-headless"))')"
	$(PY) -c "import cv2, torch, torchvision; cv2.ximgproc.segmentation; print('setup ok: torch', torch.__version__, '| cv2', cv2.__version__, 'with ximgproc')"
	touch $@

# The main job: train the default detector (Faster R-CNN fine-tuning ../shared's ImageNet
# MobileNetV2 on the built-in shapes, generated on first use), evaluate the best checkpoint on the
# test split, and draw detections on two test images. --overwrite: a second `make demo` trains
# afresh in the same folder (tools/train.py refuses to replace an earlier run without it).
DEMO_RUN := runs/faster_rcnn_shapes_mnv2
demo: setup
	$(PY) tools/train.py --overwrite
	$(PY) tools/eval.py --data builtin --split test --checkpoint $(DEMO_RUN)/best.pt --plots $(DEMO_RUN)
	$(PY) tools/infer.py data/shapes/JPEGImages/test_000000.jpg data/shapes/JPEGImages/test_000001.jpg --out $(DEMO_RUN)/infer

test: setup
	@# pytest exits 5 when it collects no tests; that is not a failure, anything else is.
	$(PY) -m pytest -q $(PYTEST_ARGS) || test $$? -eq 5

benchmark: setup
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/data_speed.py

clean-venv:
	rm -rf $(VENV)
