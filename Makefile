# Two entry points (see README): `make run` and `make test`. Both set up what they need.
VENV  := .venv
MEDIA ?= .cache/media
CLIP  ?= $(MEDIA)/megamind.avi
OUT   ?= out

.PHONY: setup media run test test-fast lint bench clean

setup:
	scripts/setup.sh

media: setup
	scripts/fetch_test_media.sh $(VENV)/bin/python

run: media
	$(VENV)/bin/emo-stream run --input $(CLIP) --jsonl $(OUT)/states.jsonl

# The ROS 2 tests run on Kilted (.venv-ros) and on the Jazzy LTS (.venv-ros-jazzy), one venv each: the ROS wheels re-execute every
# Python process of their venv, so they never share one with the rest.
test: media lint
	$(VENV)/bin/python -m pytest -q
	scripts/robot_test.sh
	scripts/ros_setup.sh kilted
	ROS_DISTRO=kilted scripts/ros_test.sh
	scripts/ros_setup.sh jazzy
	ROS_DISTRO=jazzy scripts/ros_test.sh
	scripts/gui_setup.sh && scripts/gui_test.sh

# The quick loop while editing: the main venv's tests without those marked slow (real models,
# long media); no lint, no ROS/robot/GUI venvs. `make test` stays the gate. Measured on 2 cores:
# ~70 s for ~900 of ~1,200 tests (the full suite: ~7-8 min).
test-fast: media
	$(VENV)/bin/python -m pytest -q -m "not slow"

# Static checks (issue 15), run first by `make test` (so by .ci/run): ruff lint + format, mypy
# types, import-linter layers (tests/test_architecture.py runs the contracts too).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(OUT) .pytest_cache

# Benchmarks (numbers for notes; never pass/fail): the bench command + the pytest-benchmark suite.
bench: media
	$(VENV)/bin/emo-stream bench --input $(MEDIA)/astronaut_speech.mp4 --json $(OUT)/bench.json
	$(VENV)/bin/python -m pytest -q tests/bench --benchmark-enable
