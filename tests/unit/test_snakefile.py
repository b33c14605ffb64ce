"""longtail.snakefile: the config-file checks (empty mapping, duplicate keys) and the SIGINT policy
of the main Snakemake process, on plain files and a stand-in workflow object."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from longtail.snakefile import ConfigFileError, check_config_file, check_config_files, stop_gracefully_on_sigint


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, line, key", [
    ("a: 1\nb: 2\na: 3\n", 3, "a"),
    ("runs:\n  x:\n    params: {lr: 1, lr: 2}\n", 3, "lr"),
    ("- {k: 1}\n- k: 1\n  j: 2\n  k: 3\n", 4, "k"),
    ("1: a\n1: b\n", 2, "1"),
])
def test_duplicate_keys_name_file_line_and_key(tmp_path, text, line, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError, match=rf"^{path}: line {line}: key '{key}' is given twice"):
        check_config_file(path)


def test_valid_files_pass(tmp_path):
    check_config_file(write(tmp_path, "a: {b: 1}\nc: {b: 2}\n"))  # the same key in two mappings
    check_config_file(write(tmp_path, "base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  x: 3\n"))  # merge + override
    check_config_file(write(tmp_path, '{"a": 1, "b": {"a": 2}}'))  # JSON
    check_config_file(write(tmp_path, "__use_yte__: true\n?if true:\n  a: 1\n?else:\n  a: 2\n"))  # YTE: Snakemake's


@pytest.mark.parametrize("text", ["{}\n", "# a comment\n{}\n", "{}"])
def test_empty_mapping_is_refused(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError, match=rf"^{path} holds no settings"):
        check_config_file(path)


def test_each_file_is_checked(tmp_path):
    good, bad = write(tmp_path, "a: 1\n", "good.yaml"), write(tmp_path, "{}\n", "bad.yaml")
    check_config_files([good, str(good)])
    with pytest.raises(ConfigFileError, match="bad.yaml"):
        check_config_files([good, bad])


class Scheduler:
    def __init__(self) -> None:
        self.stopped = threading.Event()

    def exit_gracefully(self, *args) -> None:
        self.stopped.set()


@pytest.fixture
def sigint_restored():
    before = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, before)


def workflow(scheduler=None, local=True, main=True) -> SimpleNamespace:
    return SimpleNamespace(scheduler=scheduler, local_exec=local, is_main_process=main)


def test_sigint_while_jobs_run_locally_stops_gracefully(sigint_restored, capsys):
    sched = Scheduler()
    stop_gracefully_on_sigint(workflow(sched))
    os.kill(os.getpid(), signal.SIGINT)
    assert sched.stopped.wait(5), "SIGINT did not reach the scheduler's graceful stop"
    assert "running jobs finish" in capsys.readouterr().err
    sched.stopped.clear()
    os.kill(os.getpid(), signal.SIGINT)  # again: still graceful, never Snakemake's forgetful stop
    assert sched.stopped.wait(5)
    assert "running jobs finish" not in capsys.readouterr().err  # said once


@pytest.mark.parametrize("wf", [workflow(None), workflow(Scheduler(), local=False)], ids=["no scheduler", "cluster"])
def test_sigint_otherwise_interrupts(sigint_restored, wf):
    stop_gracefully_on_sigint(wf)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(5)  # the handler runs between bytecodes of this thread


def test_job_processes_keep_the_default_handler(sigint_restored):
    before = signal.getsignal(signal.SIGINT)
    stop_gracefully_on_sigint(workflow(Scheduler(), main=False))
    assert signal.getsignal(signal.SIGINT) is before
