# cns_ros developer commands. `make test` is what CI runs (.ci/run).
#   make venv   create/update .venv (idempotent; re-runs pip only when requirements change)
#   make test   venv + ruff + pytest
#   make lint   ruff only
#   make bench  CPU benchmarks (numbers printed and written to benchmarks/results/*.json)
#   make demo   venv + the end-to-end demo: synthetic world -> simulated-teacher pseudo-labels
#               -> training -> bundle -> bag -> live replay_node + segment_node -> live mIoU
#               (everything under demo_out/; DEMO_ARGS='--steps 600' etc. are passed on)
#   make demo-indoor  venv + the indoor demo (= make demo DEMO_ARGS=--indoor): synthetic rooms in
#               the ScanNet layout -> simulated-teacher pseudo-labels -> training -> bundle ->
#               RGB-D bag -> live replay_node + segment_node (rgbd_images) -> live mIoU against
#               the mesh vertices (demo_out/indoor/; DEMO_ARGS='--steps 600', '--fast' etc.)
#   make demo-ovs3d  venv + the 3D-OVS demo: synthetic scene -> train_ovs3d (stand-in teachers)
#               -> labeled map -> live ovs_map_node: accuracy vs ground truth, runtime relabel,
#               a refused vocabulary (demo_out/ovs3d/; DEMO_ARGS='--keep' reuses the training)
# On a host with a sourced ROS 2 install (ROS_DISTRO set) the venv sees the system rclpy and
# requirements/ros-pip.txt is skipped.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.cns_ros-installed
PIP := $(VPY) -m pip install --disable-pip-version-check --progress-bar off
PYTEST_ARGS ?=
DEMO_ARGS ?=

ifdef ROS_DISTRO
VENV_FLAGS := --system-site-packages
REQS := -r requirements/ml.txt -r requirements/dev.txt
else
VENV_FLAGS :=
REQS := -r requirements/ml.txt -r requirements/dev.txt -r requirements/ros-pip.txt
endif

.PHONY: venv test lint bench demo demo-indoor demo-ovs3d clean

venv: $(STAMP)

$(STAMP): requirements/ml.txt requirements/dev.txt requirements/ros-pip.txt setup.py setup.cfg
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PIP) -q $(REQS)
	$(PIP) -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .

test: lint
	$(VPY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(VPY) benchmarks/bench_pointcloud.py
	$(VPY) benchmarks/bench_geometry.py
	$(VPY) benchmarks/bench_replay.py
	$(VPY) benchmarks/bench_teachers.py
	$(VPY) benchmarks/bench_ovs3d.py

demo: venv
	$(VPY) -m offline_training.demo --out demo_out $(DEMO_ARGS)

demo-indoor: venv
	$(VPY) -m offline_training.demo_indoor --out demo_out/indoor $(DEMO_ARGS)

demo-ovs3d: venv
	$(VPY) -m offline_training.demo_ovs3d --out demo_out/ovs3d $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info build
