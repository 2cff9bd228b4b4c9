"""runner's tag, param-prefix and Optuna attribute names live in runner/names.py only: no
production module spells one out, so a stored run or study is read back by the same names
that wrote it."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from runner.names import Prefix, StudyAttr, Tag, all_names

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for root in ("runner", "hydra_plugins") for p in (REPO / root).rglob("*.py") if p != REPO / "runner" / "names.py"
)
NAMES = all_names()
DOTTED = {v for v in NAMES.values() if "." in v}  # runner.*, optuna.*, best.*, mlflow.*, prefixes
ATTR_CALLS = ("set_user_attr", "set_trial_attr", "fail_trial")  # (name, value) calls


def _logger_args(tree: ast.AST) -> set:
    """String constants that name a logger (logging.getLogger("runner.sweep")): not tags."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "getLogger":
            found.update(id(a) for a in node.args)
    return found


def _literals(path: Path) -> Iterator[Tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    loggers = _logger_args(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in loggers:
            yield node.lineno, node.value


def _attr_literals(path: Path) -> Iterator[Tuple[int, str]]:
    """Literal names given to Optuna's user attributes: set_user_attr("x", ...),
    user_attrs.get("x"), user_attrs["x"]."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = getattr(func, "attr", "")
            on_attrs = name == "get" and getattr(func.value, "attr", "") == "user_attrs"  # type: ignore[attr-defined]
            if name in ATTR_CALLS or on_attrs:
                yield node.lineno, str(node.args[0].value)
        if isinstance(node, ast.Subscript) and getattr(node.value, "attr", "") == "user_attrs":
            if isinstance(node.slice, ast.Constant):
                yield node.lineno, str(node.slice.value)


def test_names_are_unique_and_namespaced():
    tags = {k: v for k, v in NAMES.items() if k.startswith("Tag.")}
    assert len(set(tags.values())) == len(tags), "two Tag constants share a value"
    assert all(v.startswith(("runner.", "optuna.", "best.")) for v in tags.values())
    assert all(v.endswith(".") for k, v in NAMES.items() if k.startswith("Prefix."))
    assert StudyAttr.PARENT_TOKEN == Tag.PARENT_TOKEN  # the same token on the study and the run
    assert Prefix.USER_TAG == "user."


def test_no_module_spells_out_a_tag_or_prefix():
    offenders: List[str] = []
    for path in SOURCES:
        for line, text in _literals(path):
            if text in DOTTED:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    assert not offenders, "use runner.names instead of:\n" + "\n".join(offenders)


def test_no_module_spells_out_an_optuna_attribute():
    # Any literal there is an offender: attribute names come from TrialAttr / StudyAttr.
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {text!r}" for path in SOURCES for line, text in _attr_literals(path)
    ]
    assert not offenders, "use runner.names.TrialAttr / StudyAttr instead of:\n" + "\n".join(offenders)


def test_the_check_finds_a_literal(tmp_path):
    """The scan itself: a tag and an attribute spelled out are found, a logger name is not."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import logging\nlog = logging.getLogger('runner.sweep')\n"
        "tags = {'runner.error': 'x'}\ntrial.set_user_attr('mlflow_run_id', 1)\nt.user_attrs.get('error')\n"
    )
    assert [t for _, t in _literals(bad) if t in DOTTED] == ["runner.error"]
    assert sorted(t for _, t in _attr_literals(bad)) == ["error", "mlflow_run_id"]
