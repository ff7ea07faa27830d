"""Saving and loading through huggingface_hub: local folders, the offline cache, and refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import safetensors.torch
import torch

from ser_model import EmotionEnsemble, EmotionNet, ModelConfig, ModelLoadError

from .conftest import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def saved(tmp_path, random_model):
    folder = tmp_path / "model"
    random_model.save_pretrained(folder)
    return folder


def test_save_writes_config_safetensors_and_card(saved):
    assert {p.name for p in saved.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    assert "audio-classification" in (saved / "README.md").read_text()


def test_local_round_trip_gives_identical_outputs(saved, random_model):
    loaded = EmotionNet.from_pretrained(saved)
    waveform = torch.randn(2, random_model.config.n_samples) * 0.1
    with torch.inference_mode():
        torch.testing.assert_close(loaded(waveform).logits, random_model(waveform).logits, rtol=0, atol=0)
    assert loaded.config == random_model.config and not loaded.training


def test_config_round_trip_keeps_non_default_sizes(tmp_path):
    config = ModelConfig(n_mels=40, d_model=32, n_layers=1, labels=["a", "b", "c"])
    EmotionNet(config).save_pretrained(tmp_path)
    assert EmotionNet.from_pretrained(tmp_path).config == config


def test_renamed_or_missing_tensor_is_refused(saved):
    weights = safetensors.torch.load_file(saved / "model.safetensors")
    weights["head.1.renamed_weight"] = weights.pop("head.1.weight")
    safetensors.torch.save_file(weights, saved / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"missing \['head.1.weight'\].*unexpected \['head.1.renamed_weight'\]"):
        EmotionNet.from_pretrained(saved)
    del weights["head.1.renamed_weight"]
    safetensors.torch.save_file(weights, saved / "model.safetensors")
    with pytest.raises(ModelLoadError, match="missing"):
        EmotionNet.from_pretrained(saved)


def test_wrong_shape_is_refused(saved):
    weights = safetensors.torch.load_file(saved / "model.safetensors")
    weights["head.1.bias"] = torch.zeros(3)
    safetensors.torch.save_file(weights, saved / "model.safetensors")
    with pytest.raises(ModelLoadError, match="wrong shape"):
        EmotionNet.from_pretrained(saved)


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/ser-model-pickle-was-executed", "w"))


def test_pickle_checkpoint_is_never_loaded(saved):
    marker = "/tmp/ser-model-pickle-was-executed"
    if os.path.exists(marker):
        os.remove(marker)
    (saved / "model.safetensors").unlink()
    torch.save({"boom": _Exploit()}, saved / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only safetensors"):
        EmotionNet.from_pretrained(saved)
    assert not os.path.exists(marker)


def test_folder_without_config_is_refused(saved):
    (saved / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        EmotionNet.from_pretrained(saved)


def _hub_cache(root, folder, repo_id="ser-test/emotion-net", commit=COMMIT):
    """Lay out ``folder`` as huggingface_hub's cache holds a downloaded repo at ``commit``."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo_id


def _run_offline(code: str, cache) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120
    )


def test_offline_cache_round_trip_with_pinned_revision(tmp_path, saved, random_model):
    repo_id = _hub_cache(tmp_path / "cache", saved)
    torch.save(
        random_model(torch.ones(1, random_model.config.n_samples) * 0.01).logits.detach(), tmp_path / "expected.pt"
    )
    result = _run_offline(
        f"""
        import torch
        from ser_model import EmotionNet
        for revision in (None, "{COMMIT}"):
            model = EmotionNet.from_pretrained("{repo_id}", revision=revision)
            logits = model(torch.ones(1, model.config.n_samples) * 0.01).logits
            torch.testing.assert_close(logits, torch.load(r"{tmp_path / "expected.pt"}"), rtol=0, atol=0)
        print("ok")
        """,
        tmp_path / "cache",
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_unreachable_hub_raises_model_load_error(tmp_path):
    result = _run_offline(
        """
        from ser_model import EmotionNet, ModelLoadError
        try:
            EmotionNet.from_pretrained("ser-test/not-in-cache")
        except ModelLoadError as e:
            print("ModelLoadError:", e)
        """,
        tmp_path / "empty-cache",
    )
    assert "ModelLoadError: Could not load the model from 'ser-test/not-in-cache'" in result.stdout, result.stderr


def test_closed_endpoint_raises_model_load_error(tmp_path):
    env_code = """
        import os
        os.environ.pop("HF_HUB_OFFLINE")
        os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port
        from ser_model import EmotionNet, ModelLoadError
        try:
            EmotionNet.from_pretrained("ser-test/unreachable")
        except ModelLoadError as e:
            print("ModelLoadError:", e)
        """
    result = _run_offline(env_code, tmp_path / "empty-cache")
    assert "ModelLoadError: Could not load the model" in result.stdout, result.stderr


def test_an_ensemble_saves_as_one_checkpoint_and_loads_as_the_ensemble_it_is(tmp_path, random_model):
    torch.manual_seed(1)
    other = EmotionNet(random_model.config).eval()
    ensemble = EmotionEnsemble.from_members([random_model, other])
    ensemble.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    loaded = EmotionNet.from_pretrained(tmp_path)  # what the app and every CLI call
    assert isinstance(loaded, EmotionEnsemble) and loaded.config.n_models == 2
    waveform = torch.randn(3, random_model.config.n_samples) * 0.1
    with torch.inference_mode():
        mean = (random_model(waveform).logits.softmax(-1) + other(waveform).logits.softmax(-1)) / 2
        output = loaded(waveform, return_attention=True)
        torch.testing.assert_close(output.logits.softmax(-1), mean)
        torch.testing.assert_close(output.attentions, random_model(waveform, return_attention=True).attentions)
    # Strict as one model: a member's tensor missing is refused.
    state = safetensors.torch.load_file(tmp_path / "model.safetensors")
    del state["members.1.head.1.weight"]
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="members.1.head.1.weight"):
        EmotionNet.from_pretrained(tmp_path)


def test_only_models_of_one_shape_make_an_ensemble(random_model):
    with pytest.raises(ValueError, match="one shape"):
        EmotionEnsemble.from_members([random_model, EmotionNet(ModelConfig(d_model=32))])
    with pytest.raises(ValueError, match="EmotionEnsemble"):
        EmotionNet(ModelConfig(n_models=2))
