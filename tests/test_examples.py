"""The examples (the articles' snippets in lstmkit) run and their loss falls."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["keras_language_model.py", "keras_time_series.py", "pytorch_style_regression.py",
            "from_scratch_training.py"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_and_learns(name):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True,
                         timeout=120, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    found = re.search(r"^loss: ([\d.]+) -> ([\d.]+)$", run.stdout, re.M)
    assert found, run.stdout
    first, last = map(float, found.groups())
    assert last < 0.7 * first, run.stdout
