# Two entry points for a fresh Debian machine (Python 3.11, no GPU needed):
#   make run    set up, then run the main job on the embedded default and build the HTML report
#   make test   set up, then run the test suite
# Both are idempotent and reuse an existing .venv.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SMK     := $(BIN)/snakemake
CORES   ?= all
PYTEST_ARGS ?=

.PHONY: setup data run report figures preset test lint dag bench docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The stamp is newer than requirements.txt once everything in it is installed.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed data

data:
	@$(BIN)/python tools/ensure_data.py

run: setup
	$(SMK) --cores $(CORES)
	$(SMK) --report results/report.html

report:
	$(SMK) --report results/report.html

figures: setup
	$(SMK) --cores $(CORES) figures

# A paper preset by name, in its own working directory so it never mixes with the default run:
#   make preset PRESET=mfm_fmnist   ->  results/presets/mfm_fmnist/results/{tables,figures,...}
PRESET ?=
preset: setup
	@test -f config/presets/$(PRESET).yaml || { echo "preset: set PRESET to one of: $$(ls config/presets | sed 's/.yaml//' | tr '\n' ' ')" >&2; exit 2; }
	$(SMK) --configfile config/presets/$(PRESET).yaml --directory results/presets/$(PRESET) --cores $(CORES)
	$(SMK) --configfile config/presets/$(PRESET).yaml --directory results/presets/$(PRESET) --report report.html

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(SMK) --lint

dag: setup
	$(SMK) -n --quiet

bench: setup
	$(BIN)/python benchmarks/run_all.py

# The numbers in README.md and docs/*.md, rewritten from results/ (after make run; make bench
# first for docs/performance.md's benchmark figures).
docs: $(VENV)/.installed
	$(BIN)/python tools/write_docs.py

# Every output folder: the workflow's (tests/workflow/test_envs.py checks that each rule's top
# folder is listed), the glyphs source's render cache, make preset's and make bench's.
# results/README.md stays.
clean:
	rm -rf results/data results/train results/predictions results/features results/metrics \
	       results/tables results/figures results/logs results/benchmarks results/report.html \
	       results/cache results/presets results/bench
