"""The README's five-minute tour, pasted into bash against a real server, works as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import Server

README = Path(__file__).resolve().parents[2] / "README.md"


def tour_script() -> str:
    text = README.read_text()
    section = text.split("<!-- tour -->", 1)[1].split("<!-- /tour -->", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 5, "the tour lost its code blocks"
    return "\n".join(blocks)


def test_readme_tour_runs_as_written(server_with_examples: Server) -> None:
    server = server_with_examples
    script = tour_script()
    script = script.replace("127.0.0.1:4000", f"127.0.0.1:{server.port}")
    script = script.replace(".venv/bin/apphub", f"{sys.executable} -m apphub")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=server.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert '{"status":"ok"}' in output
    assert '"slug": "directory-insights-report"' in output
    assert '"reportPath": "' in output
    assert output.count('"status": "succeeded"') >= 2
    assert '"slug":"count-bytes"' in output
    assert "hello: succeeded" in output
    assert "newest decision: launched (upstream-update)" in output
    assert '"reason":"cycle_detected"' in output
    assert '"version":2' in output
    assert '"action":"workflow.update"' in output
