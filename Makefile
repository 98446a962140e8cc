# Two commands for users: `make demo` (set up + a small real reproduction), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,wandb,launchers,dashboards
DATA_DIR ?= $(CURDIR)/data
SCALE ?= cpu
JOBS ?= 2
export DATA_DIR

.PHONY: install demo test test-fast lint format l2rw-fig2 rbc-table1 own-digits tables dashboards sync bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# The smallest honest slice of L2RW Figure 2: baseline vs L2RW at 0.995 (200:1), two seeds.
# One progress bar; the jobs' logs go to outputs/demo/demo.log (VERBOSE=1: to the console).
demo: install
	$(PY) -m l2rw.demo $(if $(VERBOSE),--verbose)

test: install
	$(PY) -m pytest

# The suite without its few long end-to-end tests (marked slow), for the edit loop.
test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(PY) -m ruff check l2rw tests scripts
	$(PY) -m ruff format --check l2rw tests scripts

format: install
	$(PY) -m ruff check --fix l2rw tests scripts
	$(PY) -m ruff format l2rw tests scripts

# L2RW Figure 2 at SCALE (cpu | full), JOBS parallel processes, then its table and figure.
l2rw-fig2: install
	$(PY) -m l2rw.train +table=l2rw_fig2 scale=$(SCALE) hydra/launcher=joblib \
		hydra.launcher.n_jobs=$(JOBS) threads=1 train.progress=false
	$(PY) -m l2rw.report +table=l2rw_fig2 scale=$(SCALE)

# Any paper table's sweep at SCALE with JOBS parallel processes, then its report:
# make table-rbc_table1_mnist SCALE=cpu JOBS=2   (tables: ls conf/table)
table-%: install
	$(PY) -m l2rw.train +table=$* scale=$(SCALE) hydra/launcher=joblib \
		hydra.launcher.n_jobs=$(JOBS) threads=1 train.progress=false
	$(PY) -m l2rw.report +table=$* scale=$(SCALE)

# RBC Table 1, all its columns: three tables (one model and optimiser each).
rbc-table1: table-rbc_table1_mnist table-rbc_table1_cifar table-rbc_table1_imagenet10

# The own_data table (README, "Your own data") on scikit-learn's bundled digits: 40% and 60%
# uniform_flip noise, baseline / L2RW / Random / RBC, seeds 0-2 (results/README.md).
DIGITS := dataset=arrays dataset.options.path=data/digits.npz noise=uniform_flip noise.rate=0.4,0.6
own-digits: install
	$(PY) scripts/export_digits.py data/digits.npz
	$(PY) -m l2rw.train +table=own_data $(DIGITS) hydra/launcher=joblib \
		hydra.launcher.n_jobs=$(JOBS) threads=1 train.progress=false
	$(PY) -m l2rw.report +table=own_data $(DIGITS)

# Every table and figure at each scale that has records: results/<table>[_<scale>].{md,csv,tex,png}.
# RECORDS=results/records rebuilds the committed tables from the records committed beside them.
SCALES ?= cpu full
RECORDS ?= outputs
tables: install
	for scale in $(SCALES); do \
		$(PY) -m l2rw.report --all scale=$$scale output_root=$(RECORDS) || exit 1; \
	done
	if [ -d $(RECORDS)/own_data-arrays-digits ]; then \
		$(PY) -m l2rw.report +table=own_data $(DIGITS) output_root=$(RECORDS); \
	fi

# One W&B Report per table with records at each of SCALES, in logger.wandb.project (saved when
# logged in and WANDB_MODE is not offline/disabled, else its specification in results/dashboards/).
# Rewrites the tables as `make tables` does.
dashboards: install
	for scale in $(SCALES); do \
		$(PY) -m l2rw.report --all scale=$$scale output_root=$(RECORDS) dashboard=wandb || exit 1; \
	done

# Upload offline W&B runs of every job under outputs/ (needs `wandb login`).
sync: install
	find outputs -type d -name 'offline-run-*' -print0 | xargs -0 -r $(VENV)/bin/wandb sync

bench: install
	$(PY) scripts/bench_meta_step.py
	$(PY) scripts/bench_meta_step.py --optimizer adamw
	$(PY) scripts/bench_selection.py

clean:
	rm -rf outputs multirun .pytest_cache
