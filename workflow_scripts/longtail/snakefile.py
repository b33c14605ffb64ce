"""What the Snakefile does at parse time besides validating the config: checks of the config files
Snakemake loaded, and how the main Snakemake process stops on SIGINT.

Torch-free and cheap (config files are read once more, with PyYAML); tests/unit/test_snakefile.py
calls these on plain files and objects.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterable

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigFileError(ValueError):
    """A config file Snakemake accepts but the workflow refuses (one line, naming the file)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML, and so Snakemake, keeps
    the last value silently, so a run defined twice or a parameter set twice would pass unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:  # `<<: *anchor` merges, overriding is its purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: yaml's own error follows
                    continue
                if first is not key_node.start_mark:
                    raise ConfigFileError(
                        f"line {key_node.start_mark.line + 1}: key '{key}' is given twice in one mapping "
                        f"(first on line {first.line + 1}); keep one")
        return super().construct_mapping(node, deep=deep)


def check_config_file(path: str | Path) -> None:
    """Refuse a config file that holds an empty mapping or a duplicate key.

    Snakemake has already loaded it (as JSON or YAML); a file it reads as YTE templating, or one
    PyYAML cannot read (JSON's rare non-YAML corners), is left to Snakemake.
    """
    text = Path(path).read_text(encoding="utf-8")
    if "__use_yte__" in text:
        return
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except ConfigFileError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    except yaml.YAMLError:
        return
    if data == {}:
        raise ConfigFileError(
            f"{path} holds no settings ({{}}); give a complete config (datasets and runs, as "
            "config.yaml or a preset under config/presets/), or leave --configfile out for config.yaml")


def check_config_files(paths: Iterable[str | Path]) -> None:
    """:func:`check_config_file` on each config file Snakemake loaded, once each."""
    for path in dict.fromkeys(str(p) for p in paths):
        check_config_file(path)


def stop_gracefully_on_sigint(workflow: Any) -> None:
    """Make SIGINT to the main Snakemake process stop it as SIGTERM does when jobs run locally:
    no new job starts, running jobs finish and are recorded complete.

    Snakemake 9 turns SIGINT into KeyboardInterrupt and "terminates": the local executor waits for
    its running jobs all the same (a thread pool's shutdown), but they are never recorded as
    finished, so their complete outputs stay marked incomplete and the next run redoes them
    ("Forced execution") - a training job from scratch, its checkpoint gone with its success.
    Ctrl-C in a terminal also interrupts the jobs themselves (same process group): they fail, and
    training resumes from its last epoch's checkpoint on the next run. SIGINT before any job is
    scheduled, or under a cluster executor (whose cancel stops the cluster's jobs), keeps
    Snakemake's own behaviour; a repeated one changes nothing (Snakemake's own would still wait
    for the jobs, then forget them).
    """
    if not workflow.is_main_process or threading.current_thread() is not threading.main_thread():
        return
    told = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        graceful = getattr(workflow.scheduler, "exit_gracefully", None)
        if graceful is None or not workflow.local_exec:
            raise KeyboardInterrupt
        if not told.is_set():
            told.set()
            print("SIGINT: no new job starts; running jobs finish and count as done (to stop them "
                  "now, interrupt them too: Ctrl-C in their terminal, or kill their processes)",
                  file=sys.stderr, flush=True)
        # in a thread: the handler may run while the main thread holds the scheduler's lock
        threading.Thread(target=graceful, daemon=True).start()

    signal.signal(signal.SIGINT, on_sigint)
