"""The README's API example runs as written (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_two_setup_commands():
    text = README.read_text()
    bash = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = [line for block in bash for line in block.strip().splitlines()]
    assert len(commands) == 2
    assert any("fastcal demo" in c for c in commands)
    assert any("pytest" in c for c in commands)
    ci = (README.parent / ".ci" / "run").read_text()
    test_cmd = next(c for c in commands if "pytest" in c)
    assert test_cmd in ci  # CI runs exactly the README's test command


def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    blocks = _python_blocks()
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    assert capsys.readouterr().out.strip()  # it printed what it claims to print
