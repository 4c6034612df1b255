"""The rules that keep the layout honest.

Each import contract in ``[tool.importlinter]`` (pyproject.toml) is broken on purpose: in a copy
of the packages in a temporary directory (never in the tree), a module that breaks the rule is
written, lint-imports is run with a configuration naming that one contract and must fail; the same
copy without any breaking module passes every contract. And no module in ``ccm/``, ``providers/``,
``bench/``, ``samples/`` (and ``devtools/``) is over :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

# -- import contracts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Breaker:
    """``source`` imports ``target``: what contract ``id`` forbids."""

    source: str
    target: str


#: One breaking import per contract id. Every contract in pyproject.toml must have one (a new
#: contract needs its breaker here), and each must be a pair the contract names.
BREAKERS: dict[str, Breaker] = {
    "layers": Breaker("ccm.app", "ccm.cli"),
    "controllers-independent": Breaker("ccm.controllers.node", "ccm.controllers.route"),
    "core-not-testing": Breaker("ccm.app", "ccm.testing"),
    "testing-not-cli": Breaker("ccm.testing", "ccm.cli"),
    "no-repo-tooling": Breaker("ccm.app", "devtools"),
    "kubernetes-asyncio": Breaker("ccm.controllers", "kubernetes_asyncio"),
    "contract-no-plumbing": Breaker("ccm.cloudprovider", "ccm.kube"),
    "providers": Breaker("minimal_provider", "ccm.controllers"),
}

#: The packages copied into the temporary directory (they shadow the installed ones there): ccm,
#: and the sample provider the providers contract is broken in. The repository's tooling (bench,
#: chaos, devtools) is found in the checkout, after the copy.
COPIED = {
    "ccm": REPO / "ccm",
    "minimal_provider": REPO / "samples/minimal-provider/src/minimal_provider",
}

TIMEOUT = 120.0


def _linter_config() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)["tool"]["importlinter"]
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"unexpected value in [tool.importlinter]: {value!r}")


def _write_config(path: Path, config: dict[str, Any], contracts: list[dict[str, Any]]) -> None:
    lines = ["[tool.importlinter]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in config.items() if k != "contracts"]
    for contract in contracts:
        lines += ["", "[[tool.importlinter.contracts]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in contract.items()]
    path.write_text("\n".join(lines) + "\n")


def _lint_imports(tree: Path, config: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "importlinter.cli"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(REPO)])}
    return subprocess.run(
        [*command, "--config", str(config), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _module_path(tree: Path, module: str) -> tuple[Path, bool]:
    """The file of ``module`` in ``tree`` and whether it is a package (``__init__.py``)."""
    base = tree.joinpath(*module.split("."))
    if (base / "__init__.py").exists():
        return base / "__init__.py", True
    return base.with_suffix(".py"), False


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("arch")
    for name, src in COPIED.items():
        shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_every_contract_has_a_breaker_that_it_names() -> None:
    contracts = _linter_config()["contracts"]
    ids = [c.get("id") for c in contracts]
    assert all(ids), "every contract needs an id (lint-imports --contract ID)"
    assert sorted(ids) == sorted(BREAKERS)
    for contract in contracts:
        brk = BREAKERS[contract["id"]]
        if contract["type"] == "forbidden":
            assert any(_within(brk.source, m) for m in contract["source_modules"])
            assert any(_within(brk.target, m) for m in contract["forbidden_modules"])
        elif contract["type"] == "independence":
            assert brk.source in contract["modules"] and brk.target in contract["modules"]
        elif contract["type"] == "layers":
            layers = [[m.strip() for m in layer.split("|")] for layer in contract["layers"]]
            low = next(i for i, layer in enumerate(layers) if brk.source in layer)
            high = next(i for i, layer in enumerate(layers) if brk.target in layer)
            assert high < low, "the breaker must import a higher layer from a lower one"
        else:
            pytest.fail(f"contract type {contract['type']!r}: teach this test to break it")


def _within(module: str, ancestor: str) -> bool:
    return module == ancestor or module.startswith(ancestor + ".")


def test_the_copied_tree_keeps_every_contract(tree: Path) -> None:
    config = _linter_config()
    path = tree / "all-contracts.toml"
    _write_config(path, config, config["contracts"])
    result = _lint_imports(tree, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(config['contracts'])} kept, 0 broken." in result.stdout


@pytest.mark.parametrize("contract_id", sorted(BREAKERS))
def test_each_contract_fails_when_its_rule_is_broken(tree: Path, contract_id: str) -> None:
    config = _linter_config()
    contract = next(c for c in config["contracts"] if c.get("id") == contract_id)
    brk = BREAKERS[contract_id]
    path, is_package = _module_path(tree, brk.source)
    line = f"import {brk.target}  # breaks contract {contract_id}\n"
    if is_package:
        # A new submodule of the package: part of it for every contract.
        breaking = path.with_name("_breaks_the_contract.py")
        breaking.write_text(line)
        undo = breaking.unlink
    else:
        original = path.read_text()
        path.write_text(original + line)

        def undo() -> None:
            path.write_text(original)

    config_path = tree / f"{contract_id}.toml"
    _write_config(config_path, config, [contract])
    try:
        result = _lint_imports(tree, config_path)
    finally:
        undo()
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Contracts: 0 kept, 1 broken." in result.stdout, result.stdout + result.stderr
    assert brk.source in result.stdout


# -- module size -----------------------------------------------------------------------------------

#: A module longer than this holds more than one purpose: split it along its seams.
MAX_LINES = 500

#: Where the rule applies (the folders that do not exist in a checkout are skipped).
SIZE_ROOTS = ("ccm", "providers", "bench", "samples", "devtools", "chaos")

_SKIPPED_PARTS = {".venv", "__pycache__", "build", "dist", "node_modules"}


def _python_files() -> Iterator[Path]:
    for root in SIZE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO)
            if _SKIPPED_PARTS.isdisjoint(rel.parts) and not any(
                p.endswith(".egg-info") for p in rel.parts
            ):
                yield path


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_is_over_the_line_limit() -> None:
    over = {
        str(p.relative_to(REPO)): n for p in _python_files() if (n := _line_count(p)) > MAX_LINES
    }
    assert not over, f"modules over {MAX_LINES} lines (split them along their seams): {over}"
