"""bench/request_instructions.py refuses what it cannot measure, with a reason, before
it runs anything (valgrind is never started for a bad argument)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import request_instructions


def test_a_directory_that_is_not_a_checkout_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert request_instructions.main(["--trees", str(tmp_path)]) == 2
    assert "is not a checkout of this project" in capsys.readouterr().err


def test_an_unknown_leg_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert request_instructions.main(["--legs", "plain,udp"]) == 2
    assert "--legs: plain and/or tls" in capsys.readouterr().err
