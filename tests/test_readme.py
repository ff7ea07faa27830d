"""The README's Python example runs as written."""

from __future__ import annotations

import re

import soundfile as sf

from .conftest import ROOT, speech_like


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"<!-- example: api -->\s*```python\n(.*?)```", readme, re.DOTALL).group(1)
    (tmp_path / "checkpoints").symlink_to(ROOT / "checkpoints")
    sf.write(tmp_path / "my_voice.wav", speech_like(2.5, 44100), 44100)  # a typical upload rate
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    prediction = namespace["prediction"]
    assert prediction.label in prediction.probabilities
