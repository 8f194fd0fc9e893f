"""`neofleet sandbox demo` exits 1 with the reason on its last line whenever the story did
not end as it should (the e2e tier runs the real demo both ways; here the command's
mapping of a result to an exit status, with the demo's run replaced by a result)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from neofleet.cli import main
from neofleet.sandbox import demo


@pytest.mark.parametrize(("problems", "code"), [
    ([], 0),
    (["the canary ended RolledBack: analysis failed", "pool cpu: no data: ..."], 1),
])
def test_the_demo_command_fails_when_the_story_does(monkeypatch: pytest.MonkeyPatch,
                                                     problems: list[str], code: int) -> None:
    def fake_run(folder: Any, keep: bool, say: Any) -> dict[str, Any]:
        say("[5/6] ...")
        return {"phase": "Healthy" if not problems else "RolledBack", "problems": problems}

    monkeypatch.setattr(demo, "run", fake_run)
    done = CliRunner().invoke(main, ["sandbox", "demo"])
    assert done.exit_code == code, done.output
    if problems:
        last = done.output.strip().splitlines()[-1]
        assert last.startswith("Error: the demo failed: the canary ended RolledBack")
        assert "no data" in last


def test_failure_is_none_only_without_problems() -> None:
    assert demo.failure({"problems": []}) is None
    assert demo.failure({"problems": ["a", "b"]}) == "a; b"
