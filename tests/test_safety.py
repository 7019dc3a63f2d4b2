"""Config values never reach eval/exec or an unquoted shell word; names stay inside results/."""

from __future__ import annotations

import ast
import re

import pytest

from iclrepro import config


def builtin_calls(source: str) -> set[str]:
    """Names of the plain functions called in `source` (not methods such as module.eval())."""
    return {node.func.id for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}


def test_no_eval_or_exec_in_the_package(root):
    assert builtin_calls("x = eval(text)\nmodel.eval()") == {"eval"}
    for path in (root / "src").rglob("*.py"):
        assert not {"eval", "exec", "compile"} & builtin_calls(path.read_text()), path


def test_every_shell_placeholder_is_quoted(root):
    checked = 0
    for path in (root / "workflow" / "rules").glob("*.smk"):
        strings = "".join(re.findall(r'"([^"]*)"', path.read_text()))
        for placeholder in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", strings):
            if placeholder.startswith(("params.", "input", "output", "log")):
                assert placeholder.endswith(":q"), f"{path.name}: {{{placeholder}}} is not shell-quoted"
                checked += 1
    assert checked >= 4  # the remaining shell rule (claims_table); the others are scripts


@pytest.mark.parametrize("results", ["../elsewhere", "/tmp/abs", "results/../../x", "res ults", "a;rm -rf b"])
def test_results_dir_cannot_leave_the_working_directory(results):
    with pytest.raises(config.ConfigError, match="must be a relative path"):
        config.check_results_dir(results)
