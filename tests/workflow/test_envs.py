"""Static checks of the per-rule conda environments (conda cannot reach its channels here).

Every rule names an env in envs/; every module its script imports (the script itself and,
transitively, the ``longtail`` modules it pulls in, parsed with ``ast``) is provided by that env;
the env's pins agree with requirements.txt; channels are conda-forge with nodefaults.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "workflow_scripts"
LIB = SCRIPTS / "longtail"

# Top-level import name -> conda-forge package name.
CONDA_NAME = {
    "torch": "pytorch", "torchvision": "torchvision", "numpy": "numpy", "pandas": "pandas",
    "pyarrow": "pyarrow", "scipy": "scipy", "sklearn": "scikit-learn", "matplotlib": "matplotlib-base",
    "openTSNE": "opentsne", "yaml": "pyyaml", "tqdm": "tqdm", "PIL": "pillow", "jinja2": "jinja2",
    "tabulate": "tabulate", "fontTools": "fonttools",
}
# conda-forge package name -> the pip distribution pinned in requirements.txt.
PIP_NAME = {"pytorch": "torch", "matplotlib-base": "matplotlib", "opentsne": "openTSNE"}
# Packages that a library uses without importing them (pandas.DataFrame.to_markdown needs tabulate).
RUNTIME_EXTRAS = {"table.py": {"tabulate"}}
# Imports inside functions that a rule's env may lack because that rule never calls the function,
# each with the reason. Module-level imports are never excused.
LAZY_NOT_NEEDED = {
    ("analysis", "torch"): "longtail.io.torch_save and the method registry: only torch rules save checkpoints or build methods",
    ("analysis", "torchvision"): "longtail.sources downloads/CIFAR readers: only curate/train/sample_grid read sources",
    ("analysis", "PIL"): "longtail.sources image-list reader: only curate/train/sample_grid read images",
    ("analysis", "fontTools"): "longtail.sources glyphs renderer: only curate/train/sample_grid read sources",
    ("analysis", "tqdm"): "the method registry (trainer progress bars): only torch rules train",
    ("torch", "openTSNE"): "longtail.plots t-SNE: only the tsne rule (analysis env) runs it",
}


def rule_blocks() -> dict[str, str]:
    """{rule name: its source text} from every rules/*.smk and the Snakefile."""
    blocks: dict[str, str] = {}
    for f in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        parts = re.split(r"^rule (\w+):\n", f.read_text(), flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2]):
            blocks[name] = body
    return blocks


def directive(body: str, key: str) -> str | None:
    m = re.search(rf"^    {key}:\n\s+\"([^\"]+)\"", body, flags=re.M)
    return m.group(1) if m else None


def env_deps(path: Path) -> dict[str, str]:
    """{conda package: pinned version} of an env file."""
    spec = yaml.safe_load(path.read_text())
    deps = {}
    for dep in spec["dependencies"]:
        assert isinstance(dep, str), f"{path.name}: pip sections are not allowed ({dep})"
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*=+\s*([0-9][^\s]*)", dep.strip())
        assert m, f"{path.name}: '{dep}' is not pinned as 'name =version'"
        deps[m.group(1)] = m.group(2)
    return deps


def _module_file(name: str) -> Path | None:
    """File of a ``longtail`` module (package -> __init__.py), else None."""
    parts = name.split(".")
    if parts[0] != "longtail":
        return None
    base = SCRIPTS.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _package_of(path: Path) -> str:
    rel = path.relative_to(SCRIPTS).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] != "__init__" else parts[:-1])


def imports_of(script: Path) -> tuple[set[str], set[str]]:
    """(module-level, function-level) third-party top-level import names reachable from a script.

    Follows ``longtail`` imports transitively (absolute and relative); a package that registers
    modules dynamically (pkgutil, on first use of its registry) pulls in all of its modules, as
    function-level (lazy) imports.
    """
    eager: set[str] = set()
    lazy: set[str] = set()
    seen: set[Path] = set()
    todo = [(script, True, False)]
    while todo:
        path, from_script, dynamic = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text())
        pkg = _package_of(path) if path.is_relative_to(LIB) else ""
        top_level = {id(n) for n in tree.body}
        never = set()  # `if TYPE_CHECKING:` blocks: for type checkers only, never run
        for stmt in tree.body:  # `if` / `try` at module level run at import time too
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                never |= {id(n) for n in ast.walk(stmt)}
            elif isinstance(stmt, (ast.If, ast.Try)):
                top_level |= {id(n) for n in ast.walk(stmt)}
        if "pkgutil" in path.read_text() and path.name == "__init__.py":
            todo += [(p, False, True) for p in path.parent.rglob("*.py")]
        for node in ast.walk(tree):
            if id(node) in never:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                    names = [mod] + [f"{mod}.{a.name}" for a in node.names]
                else:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name is None or name == "__future__":
                    continue
                f = _module_file(name)
                if f is not None:
                    # Parent packages run first (longtail.methods.plain imports longtail.methods).
                    parts = name.split(".")
                    for i in range(1, len(parts) + 1):
                        pf = _module_file(".".join(parts[:i]))
                        if pf is not None:
                            todo.append((pf, False, dynamic))
                    continue
                top = name.split(".")[0]
                if top == "longtail" or top in sys.stdlib_module_names:
                    continue
                (eager if (id(node) in top_level or from_script) and not dynamic else lazy).add(top)
    return eager, lazy


RULES = {name: body for name, body in rule_blocks().items() if directive(body, "script")}
ENVS = {p.stem: p for p in (ROOT / "envs").glob("*.yaml")}


def test_rules_found() -> None:
    assert {"curate", "train", "evaluate", "table", "tsne", "sample_grid"} <= set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_env_provides_every_import(rule: str) -> None:
    body = RULES[rule]
    conda = directive(body, "conda")
    assert conda, f"rule {rule} has no conda: directive"
    env_path = (ROOT / "rules" / conda).resolve()
    assert env_path.is_file(), f"rule {rule}: conda env {conda} does not exist"
    env = env_path.stem
    deps = env_deps(env_path)
    script = (ROOT / "rules" / directive(body, "script")).resolve()
    eager, lazy = imports_of(script)
    eager |= RUNTIME_EXTRAS.get(script.name, set())
    for name in sorted(eager | lazy):
        assert name in CONDA_NAME, f"{script.name} imports '{name}': add its conda package to CONDA_NAME"
        if name in lazy and name not in eager and (env, name) in LAZY_NOT_NEEDED:
            continue
        assert CONDA_NAME[name] in deps, (
            f"rule {rule} ({script.name}) imports '{name}' but envs/{env}.yaml lacks {CONDA_NAME[name]}")


def test_import_scan_follows_the_library() -> None:
    """The scan is not vacuous: train.py reaches torch, pyarrow (via pipeline) and yaml."""
    eager, _ = imports_of(SCRIPTS / "train.py")
    assert {"torch", "pandas", "pyarrow", "yaml", "numpy"} <= eager


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


@pytest.mark.parametrize("env", sorted(ENVS))
def test_env_pins_agree_with_requirements(env: str) -> None:
    reqs = _requirements()
    for pkg, version in env_deps(ENVS[env]).items():
        if pkg == "python":
            assert version.startswith(f"{sys.version_info.major}.{sys.version_info.minor}"), \
                f"envs/{env}.yaml pins python {version}; the project runs {sys.version.split()[0]}"
            continue
        pip = PIP_NAME.get(pkg, pkg).lower()
        if pip in reqs:
            assert version == reqs[pip], f"envs/{env}.yaml pins {pkg} {version}, requirements.txt {reqs[pip]}"
        else:  # not pinned directly: must match what the tested stack installed
            try:
                installed = metadata.version(PIP_NAME.get(pkg, pkg))
            except metadata.PackageNotFoundError:
                pytest.fail(f"envs/{env}.yaml pins {pkg}, which is neither in requirements.txt nor installed")
            assert version == installed, f"envs/{env}.yaml pins {pkg} {version}, the tested stack has {installed}"


@pytest.mark.parametrize("env", sorted(ENVS))
def test_env_channels(env: str) -> None:
    spec = yaml.safe_load(ENVS[env].read_text())
    channels = spec["channels"]
    assert channels[0] == "conda-forge", f"envs/{env}.yaml: conda-forge must come first"
    assert "nodefaults" in channels, f"envs/{env}.yaml: add nodefaults (no Anaconda defaults channel)"
    assert "defaults" not in channels
    assert set(channels) <= {"conda-forge", "nodefaults", "pytorch", "nvidia"}


def test_every_env_is_used() -> None:
    used = {(ROOT / "rules" / directive(b, "conda")).resolve().stem for b in RULES.values()}
    assert used == set(ENVS), f"unused env files: {set(ENVS) - used}"


# ------------------------------------------------------------------------------ layout of the rules


def test_script_and_caption_are_named_after_their_rule() -> None:
    """workflow_scripts/<rule>.py and rules/report/<rule>.rst: one name to search for."""
    for rule, body in RULES.items():
        assert Path(directive(body, "script")).stem == rule, f"rule {rule}: script {directive(body, 'script')}"
        for caption in re.findall(r'caption="([^"]+)"', body):
            assert Path(caption).stem == rule, f"rule {rule}: caption {caption}"
    assert {p.stem for p in SCRIPTS.glob("*.py")} == set(RULES), "an entry script without a rule"
    assert {p.stem for p in (ROOT / "rules" / "report").glob("*.rst")} <= set(RULES), "a caption without a rule"


def test_every_job_rule_has_log_benchmark_conda_resources() -> None:
    for rule, body in RULES.items():
        for key in ("log", "benchmark", "conda", "resources"):
            assert re.search(rf"^    {key}:", body, flags=re.M), f"rule {rule} has no {key}:"


def test_stage_and_family_files_hold_rules_only() -> None:
    """Helpers (input functions, checks, globals) live in rules/common.smk over longtail.targets."""
    for f in sorted((ROOT / "rules").glob("*.smk")):
        if f.name == "common.smk":
            continue
        text = f.read_text()
        assert not re.search(r"^(def |class |import |from |[A-Za-z_]\w* *=|for |if )", text, flags=re.M), \
            f"{f.name} holds more than rules"
        assert "lambda" not in text, f"{f.name}: a lambda in a rule; name an input function in common.smk"


def test_make_clean_removes_every_output_folder() -> None:
    text = "\n".join(f.read_text() for f in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")])
    written = set(re.findall(r'"(results/[A-Za-z_]+)/', text))
    assert {"results/train", "results/figures", "results/logs", "results/benchmarks"} <= written
    recipe = re.search(r"^clean:\n((?:\t.*\n?)+)", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe, "Makefile has no clean target"
    removed = set(re.findall(r"results/[A-Za-z_.]+", recipe.group(1)))
    assert written <= removed, f"make clean misses {sorted(written - removed)}"
    assert "results/report.html" in removed
