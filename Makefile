# The two set-up commands (see README.md):
#   make demo   set up a fresh machine and run the 16-robot antipodal swap with the CBF filter
#   make test   set up a fresh machine and run the whole test suite (CPU only)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# ament_index_python (used by rclpy and by the content resolver) needs a prefix path.
export AMENT_PREFIX_PATH ?= $(abspath $(VENV))
# The console scripts (marl-robots, the nodes) live in the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test setup setup-test lint bench clean

$(VENV)/.setup-base: setup.py setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.setup-test: $(VENV)/.setup-base
	$(PIP) install --quiet -e '.[ros,test,export]' colcon-common-extensions torch==2.13.0
	touch $@

setup: $(VENV)/.setup-base
setup-test: $(VENV)/.setup-test

demo: setup
	$(VENV)/bin/marl-robots sim navigation --robots 16 --scenario antipodal --filter cbf \
		--steps 2000 --seed 0 --out runs/demo --overwrite

# The ROS tests start many node processes and time their shutdown: they run alone, one at a
# time; the rest (JAX, MuJoCo, PyBullet, cvxpy) runs on two workers to stay within CI's 30 min.
test: setup-test
	$(PY) -m pytest tests/ros -q --durations=15
	$(PY) -m pytest tests -q --ignore=tests/ros -n 2 --durations=30

lint: setup-test
	$(VENV)/bin/ruff check marl_robots tests launch

bench: setup
	$(VENV)/bin/marl-robots bench navigation --out runs/bench.json

clean:
	rm -rf $(VENV) build install log runs
