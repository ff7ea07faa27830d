"""train: the RAVDESS table, splits, augmentation, a short real training, resume, evaluation, DDP, Hub push, sweeps."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ser_model import EmotionEnsemble, EmotionNet, EmotionRecognizer
from ser_model.audio import SAMPLE_RATE
from ser_model.model import LOG_FLOOR_DB, LogMel
from train.augment import ChannelAugment, ChannelConfig, change_speed, place_in_window, spec_augment, warp_frequencies
from train.data import actor_folds, load_speech, parse_ravdess, random_split, validation_actors
from train.train import TrainConfig, fit, load_corpus, main, prefetched, training_batches

from .conftest import RAVDESS, ROOT, speech_like

RAVDESS_DIR = os.environ.get("RAVDESS_DIR", str(RAVDESS))  # tests read the shared copy; none is committed
TINY = dict(cnn_channels=[8, 16], d_model=32, n_layers=1)  # a model size that trains in seconds
NO_CHANNELS = ChannelConfig(reverb_prob=0, noise_prob=0, telephone_prob=0, codec_prob=0, gain_prob=0)


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    config = TrainConfig(
        data=RAVDESS_DIR,
        out=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        epochs=2,
        batch_size=16,
        protocols=[],
        final=False,
        actors=[1, 2],
        channels=ChannelConfig(codec_prob=0.0),  # codec copies take seconds per actor to render; one test has them
        robustness=False,  # the robustness benchmark has a test of its own
    )
    config.model = replace(config.model, **TINY)
    return replace(config, **overrides)


def test_parse_ravdess_reads_the_shared_copy():
    clips = parse_ravdess(RAVDESS_DIR)
    assert len(clips) == 1200 and len({c.actor for c in clips}) == 20
    assert all(len([c for c in clips if c.actor == a]) == 60 for a in {c.actor for c in clips})
    first = clips[0]
    assert (first.emotion, first.intensity, first.statement, first.repetition, first.actor, first.gender) == (
        "neutral",
        "normal",
        1,
        1,
        1,
        "male",
    )


def test_parse_ravdess_accepts_official_wav_names_and_skips_others(tmp_path):
    actor = tmp_path / "Actor_07"
    actor.mkdir()
    for name in ("03-01-05-02-01-02-07.wav", "03-01-03-01-02-01-07.wav"):
        sf.write(actor / name, speech_like(1.0, 48000), 48000)  # the official download is 48 kHz WAV
    sf.write(actor / "my-recording.wav", speech_like(1.0), 16000)
    sf.write(actor / "02-01-05-02-01-02-07.wav", speech_like(1.0), 16000)  # video modality: not ours
    with pytest.warns(UserWarning, match="Skipped 2 audio files"):
        clips = parse_ravdess(tmp_path)
    assert [(c.emotion, c.intensity, c.gender) for c in clips] == [
        ("happy", "normal", "male"),
        ("angry", "strong", "male"),
    ]
    speech = load_speech(clips)
    assert all(abs(len(s) / 16000 - 1.0) < 0.3 for s in speech)  # resampled from 48 kHz and trimmed


def test_parse_ravdess_refuses_a_folder_without_ravdess(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="No RAVDESS speech files"):
        parse_ravdess(tmp_path)
    with pytest.raises(FileNotFoundError):
        parse_ravdess(tmp_path / "missing")


def test_actor_folds_are_disjoint_gender_balanced_and_keep_validation_out_of_test():
    clips = parse_ravdess(RAVDESS_DIR)
    folds = actor_folds(clips, 5)
    actors = sorted({c.actor for c in clips})
    assert sorted(a for f in folds for a in f) == actors  # every actor tested exactly once
    for fold in folds:
        assert len(fold) == 4 and sum(a % 2 for a in fold) == 2  # 2 men, 2 women
        train_actors = [a for a in actors if a not in fold]
        val = validation_actors(train_actors)
        assert set(val) <= set(train_actors) and not set(val) & set(fold) and len(val) == 2
        assert sum(a % 2 for a in val) == 1


def test_random_split_is_disjoint_and_stratified():
    clips = parse_ravdess(RAVDESS_DIR)
    train, val, test = random_split(clips, seed=0)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert len(train) + len(val) + len(test) == len(clips) and abs(len(test) - 120) <= 8
    for emotion in {c.emotion for c in clips}:
        share = sum(clips[i].emotion == emotion for i in test) / len(test)
        overall = sum(c.emotion == emotion for c in clips) / len(clips)
        assert abs(share - overall) < 0.02


def test_augmentations_keep_shapes_and_labels():
    rng = np.random.default_rng(0)
    clips = [speech_like(2.0), speech_like(4.0)]
    batch = place_in_window(clips, 48000, rng)
    assert batch.shape == (2, 48000)
    log_mel = torch.randn(2, 64, 301)
    masked = spec_augment(log_mel, n_freq_masks=2, max_freq=8, n_time_masks=2, max_time=25)
    assert masked.shape == log_mel.shape and 0 < (masked != log_mel).float().mean() < 0.5
    changed = spec_augment(log_mel, n_freq_masks=2, max_freq=8, n_time_masks=0, max_time=25) != log_mel
    assert changed.any() and torch.equal(changed, changed.any(dim=2, keepdim=True).expand_as(changed))  # whole bands
    log_mel[:, :, :10] = -80.0  # the floor: leading silence, in every band
    floored = spec_augment(log_mel, n_freq_masks=2, max_freq=8, n_time_masks=0, max_time=25, floor_share=1.0)
    masked_bands = (floored != log_mel).any(dim=2)  # (B, F)
    assert masked_bands.any()
    assert (floored[masked_bands] == -80.0).all()  # a masked band is empty, as a phone line leaves it
    assert torch.equal(floored[~masked_bands], log_mel[~masked_bands])
    slower = change_speed(clips, 0.9)
    assert len(slower[0]) == pytest.approx(len(clips[0]) / 0.9, rel=0.01)
    # Augmentation acts on inputs only; the loop indexes labels by the same clip order it draws.


def test_vocal_tract_length_perturbation_moves_a_tone_by_its_factor():
    t = torch.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    tones = torch.stack([0.1 * torch.sin(2 * torch.pi * hz * t) for hz in (1000, 1100, 6000, 5700)])
    tones[:, : SAMPLE_RATE // 2] = 0.0  # padding, as a short clip has in its window
    log_mel = LogMel(64)(tones)
    peak = log_mel[:, :, 150].argmax(dim=1)  # the band each tone sounds in
    assert torch.equal(warp_frequencies(log_mel, torch.ones(4)), log_mel)
    warped = warp_frequencies(log_mel, torch.tensor([1.1, 1.0, 0.9, 1.0]))
    assert warped.shape == log_mel.shape
    assert warped[0, :, 150].argmax() == peak[1]  # 1000 Hz stretched by 1.1 sounds where 1100 Hz does
    # Above 4.8 kHz the warp bends so Nyquist stays put: 0.9 takes 6 kHz to 5.7 kHz, not 5.4 kHz.
    assert warped[2, :, 150].argmax() == peak[3]
    assert torch.all(warped[:, :, :20] == LOG_FLOOR_DB)  # the padding stays silent


def test_short_real_training_lowers_the_loss_and_beats_chance(tmp_path):
    torch.set_num_threads(2)
    # Augmentation off and few clips: the test is that the loop learns, not that the model generalises.
    config = tiny_config(
        tmp_path,
        epochs=10,
        lr=5e-3,
        warmup_epochs=1,
        patience=100,
        channels=NO_CHANNELS,
        spec_augment=False,
        time_shift=False,
        speed_factors=[1.0],
        label_smoothing=0.0,
    )
    corpus = load_corpus([c for c in parse_ravdess(RAVDESS_DIR) if c.actor in config.actors], config)
    everything = list(range(len(corpus.clips)))
    model, history = fit(config, corpus, everything, everything[:60], tmp_path / "run")
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.3, history
    from train.train import evaluate

    train_accuracy = evaluate(model, corpus.speech, corpus.labels, torch.device("cpu"))["accuracy"]
    assert train_accuracy > 0.3, train_accuracy  # chance is 1/8; 0.3 on 120 clips is far beyond luck


def test_prefetched_batches_are_the_batches_made_in_order(tmp_path):
    # The loop takes each batch from a worker thread; the thread must change nothing about which batch it gets.
    config = tiny_config(tmp_path)
    corpus = load_corpus([c for c in parse_ravdess(RAVDESS_DIR) if c.actor in config.actors], config)
    variants = [change_speed(corpus.recordings, f) for f in config.speed_factors]

    def batches():
        augment = ChannelAugment(config.channels, seed=config.seed)
        return training_batches(
            variants, corpus.codec_copies, len(corpus.clips), augment, config, epoch=1, n_samples=48000
        )

    made, fetched = list(batches()), list(prefetched(batches()))
    assert len(made) == len(fetched) == len(corpus.clips) // config.batch_size
    for (waveform, batch, clean), (waveform2, batch2, clean2) in zip(made, fetched):
        assert np.array_equal(batch, batch2) and clean is clean2 is None
        torch.testing.assert_close(waveform, waveform2, rtol=0, atol=0)
    assert list(prefetched(iter([]))) == []

    def failing():
        yield 1
        raise RuntimeError("a corrupt batch")

    with pytest.raises(RuntimeError, match="corrupt"):  # an error in the worker reaches the loop
        list(prefetched(failing()))


def test_resume_continues_exactly_where_the_run_stopped(tmp_path, monkeypatch):
    import train.train as loop

    # Every channel augmentation on, codecs included, spectral warping and the weight average: resume must replay
    # them exactly.
    channels = ChannelConfig(codec_prob=0.5, hiss_prob=0.5)
    config = tiny_config(tmp_path, epochs=3, patience=100, channels=channels, ema_decay=0.9, vtlp_range=[0.9, 1.1])
    corpus = load_corpus([c for c in parse_ravdess(RAVDESS_DIR) if c.actor in config.actors], config)
    args = (corpus, list(range(40, len(corpus.clips))), list(range(40)))

    real_epoch = loop.train_one_epoch

    def killed_in_epoch_3(*a, epoch, **kw):
        if epoch == 2:  # the process dies during the third epoch
            raise KeyboardInterrupt
        return real_epoch(*a, epoch=epoch, **kw)

    monkeypatch.setattr(loop, "train_one_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(config, *args, tmp_path / "stopped")
    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    resumed, history = fit(replace(config, resume=True), *args, tmp_path / "stopped")
    straight, straight_history = fit(config, *args, tmp_path / "straight")
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["train_loss"] for h in history] == pytest.approx([h["train_loss"] for h in straight_history], abs=1e-6)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="ema-decay"):  # a run resumes only with the weight average it began with
        fit(replace(config, resume=True, ema_decay=0.0), *args, tmp_path / "stopped")
    with pytest.raises(ValueError, match="teachers"):  # ... and the teachers it began with
        fit(replace(config, resume=True, teachers=[str(tmp_path)]), *args, tmp_path / "stopped")
    with pytest.raises(ValueError, match="vtlp_range"):
        fit(replace(config, resume=True, vtlp_range=None), *args, tmp_path / "stopped")


def test_consistency_loss_shows_the_model_each_clip_degraded_and_clean(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, epochs=1, consistency_weight=1.0)
    corpus = load_corpus([c for c in parse_ravdess(RAVDESS_DIR) if c.actor in config.actors], config)
    rows = []
    real_classify = EmotionNet.classify

    def counting_classify(self, log_mel, **kwargs):
        rows.append(len(log_mel))
        return real_classify(self, log_mel, **kwargs)

    monkeypatch.setattr(EmotionNet, "classify", counting_classify)
    _, history = fit(config, corpus, list(range(20, len(corpus.clips))), list(range(20)), tmp_path / "run")
    assert np.isfinite(history[0]["train_loss"])
    assert rows[0] == 2 * config.batch_size  # each degraded clip and its clean view, in one batch
    with pytest.raises(ValueError, match="mixup"):
        fit(replace(config, mixup_alpha=0.2), corpus, list(range(20, 120)), list(range(20)), tmp_path / "mixed")


def test_distillation_loss_is_zero_at_the_teacher_and_pulls_towards_it():
    from train.distill import distillation_loss

    teacher_logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    for temperature in (1.0, 2.0):
        taught = torch.softmax(teacher_logits / temperature, dim=1)
        assert distillation_loss(teacher_logits, taught, temperature).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(2, 3, requires_grad=True)
    taught = torch.softmax(teacher_logits, dim=1)
    distillation_loss(student, taught, 1.0).backward()
    # The gradient of KL(p || softmax(s)) is (softmax(s) - p) / batch: a step against it moves towards p.
    torch.testing.assert_close(student.grad, (torch.full((2, 3), 1 / 3) - taught) / 2)


def three_fold_config(tmp_path, **overrides) -> TrainConfig:
    """Actors 1-6 in three folds; fold 1 trains on actors 3 and 4, stops early on 5 and 6, tests on 1 and 2."""
    overrides = dict(protocols=["actors"], n_folds=3, only_folds=[1], early_stopping=True) | overrides
    return tiny_config(tmp_path, actors=[1, 2, 3, 4, 5, 6], **overrides)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """The output folder of a short run of fold 1, to teach students of the same fold."""
    out = tmp_path_factory.mktemp("teacher")
    main(three_fold_config(out, out=str(out), seed=1, epochs=3))
    return out


def test_distillation_brings_the_student_to_its_teachers_and_refuses_teachers_that_heard_held_out_actors(
    tmp_path, teacher_run
):
    from train.distill import load_teachers

    config, teacher = three_fold_config(tmp_path), teacher_run
    main(replace(config, out=str(tmp_path / "student"), teachers=[str(teacher)], distill_weight=1.0))
    main(replace(config, out=str(tmp_path / "alone")))

    def held_out_probabilities(out: Path) -> np.ndarray:
        return np.asarray(json.loads((out / "runs" / "actors-fold1" / "result.json").read_text())["probabilities"])

    taught = held_out_probabilities(teacher)

    def divergence(out: Path) -> float:  # KL(teacher || model) on the fold's held-out actors
        p = held_out_probabilities(out)
        return float(np.mean(np.sum(taught * (np.log(taught + 1e-9) - np.log(p + 1e-9)), axis=1)))

    assert divergence(tmp_path / "student") < divergence(tmp_path / "alone")

    cpu = torch.device("cpu")
    assert len(load_teachers([str(teacher)], "actors-fold1", {3, 4}, config.model, cpu)) == 1
    with pytest.raises(ValueError, match="holds out"):  # a student tested on actor 3 must not learn from it
        load_teachers([str(teacher)], "actors-fold1", {4, 5}, config.model, cpu)
    with pytest.raises(ValueError, match="no finished"):  # the random split shares actors: nothing to check
        load_teachers([str(teacher)], "random", {1, 2, 3, 4, 5, 6}, config.model, cpu)


def test_teachers_that_hear_clean_score_the_clip_before_the_channel_degrades_it(tmp_path, monkeypatch, teacher_run):
    import train.train as loop

    heard: dict[str, list[torch.Tensor]] = {"student": [], "teachers": []}
    real_forward, real_ensemble = loop.LogMelClassifier.forward, loop.ensemble_probabilities

    def student_hears(self, log_mel):
        heard["student"].append(log_mel)
        return real_forward(self, log_mel)

    def teachers_hear(teachers, log_mel, temperature):
        heard["teachers"].append(log_mel)
        return real_ensemble(teachers, log_mel, temperature)

    monkeypatch.setattr(loop.LogMelClassifier, "forward", student_hears)
    monkeypatch.setattr(loop, "ensemble_probabilities", teachers_hear)
    config = three_fold_config(
        tmp_path, epochs=1, teachers=[str(teacher_run)], teachers_hear_clean=True, speed_factors=[1.0]
    )
    corpus = load_corpus([c for c in parse_ravdess(RAVDESS_DIR) if c.actor in config.actors], config)
    fit_idx = [i for i, c in enumerate(corpus.clips) if c.actor in (3, 4)]
    val_idx = [i for i, c in enumerate(corpus.clips) if c.actor in (5, 6)]

    # No channel: the clean clip is the one the student hears.
    fit(replace(config, channels=NO_CHANNELS), corpus, fit_idx, val_idx, tmp_path / "quiet" / "actors-fold1")
    torch.testing.assert_close(heard["teachers"][0], heard["student"][0])
    # Noise on every clip: the student hears it, the teachers do not.
    heard = {"student": [], "teachers": []}
    noisy = replace(NO_CHANNELS, noise_prob=1.0, snr_db=(0.0, 5.0))
    fit(replace(config, channels=noisy), corpus, fit_idx, val_idx, tmp_path / "noisy" / "actors-fold1")
    student, teachers = heard["student"][0], heard["teachers"][0]
    assert student.shape == teachers.shape and not torch.allclose(student, teachers, atol=1.0)
    for refused in (dict(mixup_alpha=0.2), dict(consistency_weight=1.0)):
        with pytest.raises(ValueError, match="mixup|consistency"):
            fit(replace(config, **refused), corpus, fit_idx, val_idx, tmp_path / "refused" / "actors-fold1")


def test_weight_average_warms_up_then_moves_by_one_minus_decay():
    from train.train import ema_update

    update = ema_update(0.99)
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    update(averaged, current, torch.tensor(0))  # first update: decay (1 + 0) / (10 + 0), so 90% of the way
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.9))
    update(averaged, current, torch.tensor(10_000))  # warmed up: decay 0.99
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.9 + 0.1 * 0.01))
    counters = [torch.tensor(3)]
    update(counters, [torch.tensor(7)], torch.tensor(5))  # integer buffers are copied, not averaged
    assert counters[0].item() == 7


def test_model_options_on_the_command_line_keep_their_types():
    from train.__main__ import parse_args

    config = parse_args(["--data", "x", "--model", "normalize_bands=false", "dynamic_range_db=60", "n_heads=2"])
    assert config.model.normalize_bands is False and config.model.dynamic_range_db == 60.0 and config.model.n_heads == 2
    assert parse_args(["--data", "x", "--model", "normalize_bands=true"]).model.normalize_bands is True
    with pytest.raises(ValueError, match="true or false"):
        parse_args(["--data", "x", "--model", "normalize_bands=yes please"])
    assert parse_args(["--data", "x", "--vtlp", "0.9", "1.1"]).vtlp_range == [0.9, 1.1]
    assert parse_args(["--data", "x", "--gain-db", "-50", "15"]).channels.gain_db == (-50.0, 15.0)
    assert parse_args(["--data", "x", "--spec-augment", "--spec-augment-floor", "0.5"]).spec_augment_floor == 0.5
    assert parse_args(["--data", "x", "--spec-augment", "--spec-augment-time-masks", "0"]).spec_augment_time_masks == 0
    for meaningless in (
        ["--spec-augment-floor", "0.5"],
        ["--spec-augment", "--spec-augment-floor", "2"],
        ["--spec-augment-time-masks", "0"],
        ["--spec-augment", "--spec-augment-time-masks", "-1"],
    ):
        with pytest.raises(SystemExit):  # a mask setting without masks, or out of range, is refused
            parse_args(["--data", "x", *meaningless])


def test_training_cli_writes_a_checkpoint_folder_that_loads(tmp_path):
    config = tiny_config(
        tmp_path, protocols=["actors"], n_folds=3, only_folds=[1], final=True, actors=[1, 2, 3, 4, 5, 6], epochs=1
    )
    results = main(config)
    out = tmp_path / "out"
    for name in (
        "model.safetensors",
        "config.json",
        "README.md",
        "metrics.json",
        "training_curves.png",
        "confusion_actors.png",
        "predictions_actors.csv",
    ):
        assert (out / name).is_file(), name
    assert results["actors"]["n_folds"] == 1 and results["actors"]["pooled"]["n"] == 120
    card = (out / "README.md").read_text()
    assert "unseen speakers" in card and "CC BY-NC-SA 4.0" in card and "Livingstone" in card
    assert EmotionNet.from_pretrained(out).config.cnn_channels == [8, 16]


def test_early_stopping_waits_for_half_the_schedule(tmp_path):
    # Patience 0 would stop before the first epoch; the run still trains half its schedule, then stops.
    (fold,) = main(three_fold_config(tmp_path, epochs=4, patience=0))["actors"]["folds"]
    assert fold["epochs_run"] == 2


def test_without_early_stopping_the_validation_actors_train_and_the_last_epoch_ships(tmp_path):
    config = three_fold_config(tmp_path, final=True, early_stopping=False, epochs=2)
    results = main(config)
    (fold,) = results["actors"]["folds"]
    assert fold["val_actors"] == [] and fold["n_val"] == 0 and fold["n_train"] == 4 * 60  # actors 3-6
    assert fold["best_epoch"] == fold["epochs_run"] == 2
    assert results["final"]["n_train"] == 6 * 60 and results["final"]["best_epoch"] == 2
    out = tmp_path / "out"
    last = torch.load(out / "runs" / "final" / "last.pt", weights_only=True)["model"]
    shipped = EmotionNet.from_pretrained(out).state_dict()
    for name, tensor in last.items():
        torch.testing.assert_close(shipped[name], tensor)
    assert "fixed 2 epochs (no early stopping)" in (out / "README.md").read_text()


def test_evaluate_cli_writes_the_metrics_json(tmp_path):
    model_dir = tmp_path / "model"
    EmotionNet(replace(TrainConfig().model, **TINY)).save_pretrained(model_dir)
    report = tmp_path / "metrics.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.evaluate",
            "--data",
            f"{RAVDESS_DIR}/Actor_01",
            "--model",
            str(model_dir),
            "--json",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(report.read_text())
    assert {"accuracy", "unweighted_recall", "macro_f1", "n", "labels", "confusion"} <= set(metrics)
    assert metrics["n"] == 60 and np.array(metrics["confusion"]).sum() == 60


def test_evaluate_reads_every_format_and_skips_what_it_cannot_use(tmp_path, random_model):
    from train.evaluate import evaluate_folder

    actor = tmp_path / "Actor_01"
    actor.mkdir()
    voice = speech_like(1.5)
    sf.write(actor / "03-01-01-01-01-01-01.wav", voice, 48000)
    sf.write(actor / "03-01-03-02-01-01-01.flac", voice, 16000)
    sf.write(actor / "03-01-04-02-01-01-01.ogg", voice, 16000, format="OGG", subtype="OPUS")
    sf.write(actor / "03-01-05-02-01-01-01.mp3", voice, 16000, format="MP3", subtype="MPEG_LAYER_III")
    (actor / "03-01-06-02-01-01-01.wav").write_bytes(b"RIFF, but not really")  # undecodable
    sf.write(actor / "03-01-07-02-01-01-01.wav", np.zeros(16000, np.float32), 16000)  # digital silence
    random_model.save_pretrained(tmp_path / "model")
    metrics = evaluate_folder(tmp_path, tmp_path / "model", device="cpu")
    assert metrics["n"] == 4 and np.array(metrics["confusion"]).sum() == 4
    skipped = {Path(s["path"]).name: s["reason"] for s in metrics["skipped"]}
    assert set(skipped) == {"03-01-06-02-01-01-01.wav", "03-01-07-02-01-01-01.wav"}
    assert "Could not read" in skipped["03-01-06-02-01-01-01.wav"] and "silent" in skipped["03-01-07-02-01-01-01.wav"]


def test_robustness_cli_writes_one_row_per_condition(tmp_path, random_model):
    from train.robustness import CONDITIONS

    random_model.save_pretrained(tmp_path / "model")
    report = tmp_path / "robustness.json"
    command = [
        "-m",
        "train.robustness",
        "--data",
        RAVDESS_DIR,
        "--actors",
        "1",
        "2",
        "--model",
        str(tmp_path / "model"),
    ]
    result = subprocess.run(
        [sys.executable, *command, "--json", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(report.read_text())["conditions"]
    assert [r["condition"] for r in rows] == list(CONDITIONS)
    assert all(r["n"] == 120 and 0 <= r["accuracy"] <= 1 and 0 <= r["unweighted_recall"] <= 1 for r in rows)
    assert {r["condition"]: r["refused"] for r in rows}["quiet -40 dB"] == 0  # quiet is not silent
    assert "| clean | 120 |" in result.stdout


def test_evaluate_cli_explains_a_bad_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--data", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "No RAVDESS speech files" in result.stderr


def test_two_process_ddp_run_completes(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "train",
        "--data",
        RAVDESS_DIR,
        "--out",
        str(out),
        "--actors",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "--folds",
        "3",
        "--only-folds",
        "1",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--no-final",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--model",
        "cnn_channels=8,16",
        "d_model=32",
        "n_layers=1",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fold = json.loads((out / "runs" / "actors-fold1" / "result.json").read_text())
    assert fold["epochs_run"] == 2 and fold["n"] == 120


def test_push_to_hub_uploads_the_folder_at_the_http_boundary(tmp_path, random_model):
    """The real huggingface_hub client, with its HTTP transport replaced by a recorder."""
    code = f"""
import json, httpx2
from huggingface_hub import set_client_factory
requests = []
def hub(request):
    requests.append((request.method, request.url.path, request.headers.get("authorization"), request.content))
    path = request.url.path
    if path == "/api/repos/create":
        return httpx2.Response(200, json={{"url": "https://hub.test/me/ser-parallel", "name": "me/ser-parallel"}})
    if "/preupload/" in path:
        files = json.loads(request.content)["files"]
        modes = [{{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}} for f in files]
        return httpx2.Response(200, json={{"files": modes}})
    if "/commit/" in path:
        url = "https://hub.test/me/ser-parallel/commit/1"
        return httpx2.Response(200, json={{"commitUrl": url, "commitOid": "1" * 40}})
    return httpx2.Response(200, json={{}})
set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
from train.hub import push_folder
print("URL", push_folder(r"{tmp_path / "model"}", "me/ser-parallel"))
commit = [r for r in requests if "/commit/" in r[1]][0]
print("AUTH", commit[2] == "Bearer hf_test_secret")
print("FILES", sorted(json.loads(line)["value"]["path"] for line in commit[3].decode().splitlines()
                      if json.loads(line)["key"] == "file"))
"""
    folder = tmp_path / "model"
    random_model.save_pretrained(folder)
    (folder / "runs").mkdir()
    (folder / "runs" / "last.pt").write_bytes(b"optimizer state stays local")
    env = os.environ | {"HF_TOKEN": "hf_test_secret", "HF_ENDPOINT": "https://hub.test", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "URL https://hub.test/me/ser-parallel/commit/1" in result.stdout
    assert "AUTH True" in result.stdout
    assert "FILES ['README.md', 'config.json', 'model.safetensors']" in result.stdout
    assert "hf_test_secret" not in result.stdout.replace("AUTH True", "") + result.stderr  # never printed


def test_ensemble_of_two_runs_is_scored_on_each_folds_unseen_actors_and_ships_as_one_checkpoint(tmp_path):
    from train.ensemble import check_runs
    from train.ensemble import main as ensemble_main

    runs = []
    for seed, early_stopping in ((0, True), (1, False)):  # members differ in seed, and may in early stopping
        out = tmp_path / f"seed{seed}"
        config = three_fold_config(out, out=str(out), seed=seed, epochs=1, only_folds=None, final=True)
        main(replace(config, early_stopping=early_stopping))
        runs.append(out)
    shipped = tmp_path / "ensemble"
    results = ensemble_main(["--runs", *map(str, runs), "--out", str(shipped), "--no-robustness"])

    recognizer = EmotionRecognizer.from_pretrained(shipped)
    assert isinstance(recognizer.model, EmotionEnsemble) and recognizer.model.config.n_models == 2
    assert recognizer.model.config.temperature == results["calibration"]["temperature"]
    # Each fold is scored by the mean of the members' probabilities for that fold: models that never heard it.
    with open(shipped / "predictions_actors.csv") as table:
        rows = list(csv.DictReader(table))
    for k, fold in enumerate(results["actors"]["folds"]):
        members = [json.loads((run / "runs" / f"actors-fold{k + 1}" / "result.json").read_text()) for run in runs]
        assert all(m["test_actors"] == fold["test_actors"] for m in members)
        mean = np.mean([m["probabilities"] for m in members], axis=0)
        written = np.array([[float(r[f"p_{e}"]) for e in recognizer.labels] for r in rows if int(r["fold"]) == k + 1])
        np.testing.assert_allclose(written, mean, atol=1e-4)
    card = (shipped / "README.md").read_text()
    assert "an ensemble of 2 models, the mean of their probabilities (seed 0: trained on every actor except" in card
    assert "; seed 1 without early stopping: trained on every actor for a fixed 1 epochs" in card
    assert "each fold's ensemble of 2 models (seed 0, seed 1 without early stopping) trained on" in card
    assert "python -m train.ensemble" in card and (shipped / "training_curves_seed1_no_early_stopping.png").is_file()
    # One recipe makes one ensemble: a run of the same seed, or of another recipe, is refused.
    with pytest.raises(ValueError, match="share a seed and a schedule"):
        ensemble_main(["--runs", str(runs[0]), str(runs[0]), "--out", str(tmp_path / "x")])
    config = json.loads((runs[1] / "train_config.json").read_text())
    (runs[1] / "train_config.json").write_text(json.dumps(config | {"robustness": not config["robustness"]}))
    check_runs(runs)  # whether a member also scored its folds under noise is how it ran, not its recipe
    (runs[1] / "train_config.json").write_text(json.dumps(config | {"lr": 1.0}))
    with pytest.raises(ValueError, match="differs .* in lr"):
        ensemble_main(["--runs", *map(str, runs), "--out", str(tmp_path / "x")])
    (runs[1] / "train_config.json").write_text(json.dumps(config))
    # While the runs' other folds still train, their finished folds can be scored; such a part never ships.
    (runs[0] / "runs" / "actors-fold3" / "result.json").unlink()
    with pytest.raises(ValueError, match=r"has not finished folds \[3\]"):
        check_runs(runs, final=False)
    part = ["--runs", *map(str, runs), "--out", str(tmp_path / "fold2"), "--no-robustness", "--only-folds", "2"]
    with pytest.raises(SystemExit):
        ensemble_main(part)
    fold2 = ensemble_main([*part, "--no-final"])["actors"]
    assert fold2["n_folds"] == 1 and fold2["folds"][0]["test_actors"] == results["actors"]["folds"][1]["test_actors"]
    assert fold2["accuracy"]["mean"] == results["actors"]["folds"][1]["accuracy"]


def test_sweep_runs_each_recipe_and_seed_and_scores_the_twins_ensemble(tmp_path):
    # scripts/sweep.py: the GPU sweep's launcher, here with two tiny runs on one fold of 6 actors.
    out = tmp_path / "sweep"
    tiny = ["--actors", "1", "2", "3", "4", "5", "6", "--folds", "3", "--only-folds", "1", "--epochs", "1"]
    tiny += ["--cache-dir", str(tmp_path / "cache"), "--codec-prob", "0", "--no-robustness"]
    tiny += ["--model", "cnn_channels=8,16", "d_model=32", "n_layers=1"]
    command = [sys.executable, "scripts/sweep.py", "--data", RAVDESS_DIR, "--out", str(out), "--seeds", "3"]
    result = subprocess.run(
        [*command, "--recipes", "es", "no-es", "--parallel", "2", "--threads", "1", "--", *tiny],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name, early_stopping in (("es-seed3", True), ("no-es-seed3", False)):
        assert json.loads((out / name / "train_config.json").read_text())["early_stopping"] is early_stopping
        assert f"{name} finished" in result.stdout
    twins = [
        json.loads((out / name / "runs" / "actors-fold1" / "result.json").read_text())
        for name in ("es-seed3", "no-es-seed3")
    ]
    with open(out / "es-seed3" / "clips.csv", newline="") as table:
        truth = [
            twins[0]["labels"].index(c["emotion"])
            for c in csv.DictReader(table)
            if int(c["actor"]) in twins[0]["test_actors"]
        ]
    ensemble = (np.mean([t["probabilities"] for t in twins], axis=0).argmax(1) == truth).mean()
    assert f"| es-seed3 + no-es-seed3 | {ensemble:.1%} |" in result.stdout
    summary = subprocess.run([*command, "--summary"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "| es | 1 |" in summary.stdout and "| no-es | 1 |" in summary.stdout


def test_sweep_summary_averages_each_condition_over_a_recipes_seeds(tmp_path):
    def finished_run(name: str, clean: float, babble: float) -> None:
        table = {
            "clean": {"accuracy": clean, "drop": 0.0},
            "babble 10 dB SNR": {"accuracy": babble, "drop": clean - babble},
        }
        folds = [{"accuracy": clean, "test_actors": [1, 2]}]
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"actors": {"folds": folds, "robustness": table}}))

    finished_run("no-es-seed3", clean=0.60, babble=0.48)
    finished_run("no-es-seed4", clean=0.62, babble=0.52)
    command = [sys.executable, "scripts/sweep.py", "--out", str(tmp_path), "--summary"]
    summary = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr[-3000:]
    summary = summary.stdout
    assert "| recipe (accuracy, mean over its seeds) | clean | babble 10 dB SNR | mean drop |" in summary
    assert "| no-es | 61.0% | 50.0% | 11.0 points |" in summary


def test_compare_checkpoints_sets_each_condition_side_by_side(tmp_path):
    def metrics(name: str, folds: list[float], babble: float) -> Path:
        clean = sum(folds) / len(folds)
        table = {
            "clean": {"accuracy": clean, "drop": 0.0},
            "babble 10 dB SNR": {"accuracy": babble, "drop": clean - babble},
        }
        (tmp_path / name).mkdir()
        path = tmp_path / name / "metrics.json"
        path.write_text(json.dumps({"actors": {"folds": [{"accuracy": a} for a in folds], "robustness": table}}))
        return path

    shipped, candidate = metrics("shipped", [0.60, 0.64], babble=0.50), metrics("candidate", [0.63, 0.65], babble=0.52)
    command = [sys.executable, "scripts/compare_checkpoints.py", str(shipped), str(candidate)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| babble 10 dB SNR | 50.0% | 52.0% | +2.0 points | 12.0 -> 12.0 points |" in result.stdout
    assert "candidate: folds 63.0% / 65.0% (worst 63.0%); mean over clean and the 1 conditions 58.0%" in result.stdout
    assert "mean drop 12.0 points" in result.stdout
    unscored = tmp_path / "unscored.json"
    unscored.write_text(json.dumps({"random": {}}))
    refused = subprocess.run([*command[:2], str(shipped), str(unscored)], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode != 0 and "no actors-protocol results" in refused.stderr
