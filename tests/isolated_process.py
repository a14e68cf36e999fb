"""Running a script in a fresh interpreter that cannot import this project, as a user who only
has the exported SavedModel would."""

import json
import os
import subprocess
import sys

# The project is installed editable, whose import hook would find textgen even under
# `python -I`; the preamble removes it and checks that neither package can be imported before
# the script touches the SavedModel.
PREAMBLE = r"""
import importlib.util, json, sys
sys.meta_path[:] = [
    f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")
]
sys.path_hooks[:] = [
    h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")
]
sys.path_importer_cache.clear()
for name in ("textgen", "captioning"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable"
import tensorflow as tf
"""


def run_isolated(body, args, directory):
    """Runs PREAMBLE + `body` with `args` in `directory`; returns the JSON of its last line."""
    script = directory / "use_saved_model.py"
    script.write_text(PREAMBLE + body, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run(
        [sys.executable, "-I", str(script), *map(str, args)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
