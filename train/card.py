"""The model card of a checkpoint folder: what the model is, how it was measured, and its limits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ser_model.audio import HOP_LENGTH, SAMPLE_RATE
from ser_model.model import REPO_URL, EmotionEnsemble, EmotionNet

from .augment import SPEC_AUGMENT_FREQ_MASKS, SPEC_AUGMENT_MAX_BANDS, SPEC_AUGMENT_MAX_FRAMES, ChannelConfig
from .robustness import format_table

RAVDESS_CITATION = """Livingstone SR, Russo FA (2018) The Ryerson Audio-Visual Database of Emotional Speech and Song
(RAVDESS): A dynamic, multimodal set of facial and vocal expressions in North American English.
PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391"""

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A small speech emotion recognizer trained from scratch on RAVDESS: {{ n_params }} parameters, 16 kHz
audio in, one of 8 emotions out ({{ labels }}). Code: {{ repo_url }}

## Results

Every number names its protocol. **Unseen speakers** is the one to trust: the test actors were never
heard in training, as a classroom user is not.

| protocol | test clips | accuracy | unweighted recall (UA) | macro-F1 |
|---|---|---|---|---|
{{ results_table }}

{{ results_notes }}

Per-class recall, unseen speakers (pooled over folds): {{ per_class }}.

## Robustness: what a classroom does to a voice

{{ robustness }}

## Confidence and "not sure"

{{ calibration }}

## Model

Log-mel spectrogram ({{ n_mels }} bands, {{ window_ms }} ms windows, 10 ms hop) computed inside the
model{{ log_mel_floor }}, per-band BatchNorm{{ band_snr }}, then three parallel branches fused by concatenation
into a linear classifier: two CNN branches ({{ cnn_desc }}) read the spectrogram, {{ cnn_input }}, as an
image; a {{ n_layers }}-layer pre-norm Transformer encoder (d_model {{ d_model }}, {{ n_heads }} heads) reads it
as {{ n_tokens }} tokens of {{ token_ms }} ms, pools them by {{ token_pooling }} and exposes its attention maps.
Input windows are {{ clip_seconds }} s; longer audio is scored in back-to-back windows and averaged. Leading and
trailing non-speech is trimmed and the voice levelled to -20 dBFS before the model, so microphone level and room noise
at the edges do not matter.
After "Parallel is All You Want" (2020), which reported 80.44% on a random split whose test set
shared speakers with training and included noisy copies of test clips.

## Training

- Data: RAVDESS speech, {{ n_clips }} clips from {{ n_actors }} actors (16 kHz mono).
- Shipped model: {{ final_fit }}; {{ wall_minutes }} min on {{ hardware }}
  ({{ clips_per_second }} clips/s).
- Augmentation (training only): {{ augmentation }}.
- Optimiser: AdamW (lr {{ lr }}, weight decay {{ weight_decay }} on weight matrices), warm-up then cosine
  decay, label smoothing {{ label_smoothing }}{{ auxiliary_losses }}, batch {{ batch_size }}, up to {{ epochs }}
  epochs, {{ seed }}; {{ weight_average }}.
- Reproduce: {{ reproduce }}

## Intended use and limits

A teaching and demo model. It was trained on **acted** emotion from 24 (here {{ n_actors }}) young
North American English speakers reading two neutral sentences; spontaneous speech, other languages and
accents, children, and noisy rooms will score lower. It knows only these 8 emotions and always picks one.
Do not use it to make decisions about people (hiring, grading, health, policing): emotion recognition
from voice is unreliable, and errors fall unevenly on people unlike the training speakers.

## License and citation

Trained on RAVDESS, licensed CC BY-NC-SA 4.0: these weights are a derivative and carry the same terms
(attribution, non-commercial, share-alike). Cite the dataset:

```
{{ citation }}
```
"""


def write_card(folder: str | Path, config, results: dict, model: EmotionNet | EmotionEnsemble) -> ModelCard:
    """Write ``folder/README.md`` from the training config and measured results."""
    m = model.config
    actors, random, final = results.get("actors"), results.get("random"), results["final"]
    rows, eval_results, notes = [], [], []
    members = _members(config, results, m.n_models)
    fold_model = "model" if len(members) == 1 else f"ensemble of {len(members)} models ({_names(members)})"
    if actors:
        acc, ua, f1 = actors["accuracy"], actors["unweighted_recall"], actors["macro_f1"]
        rows.append(
            f"| unseen speakers: {actors['n_folds']}-fold by actor, gender-balanced | {actors['pooled']['n']} "
            f"| **{acc['mean']:.1%}** ± {acc['std']:.1%} | {ua['mean']:.1%} ± {ua['std']:.1%} "
            f"| {f1['mean']:.1%} ± {f1['std']:.1%} |"
        )
        notes.append(
            f"Unseen speakers: mean ± standard deviation over {actors['n_folds']} folds (fold accuracy "
            f"{acc['min']:.1%} to {acc['max']:.1%}); each fold's {fold_model} trained on the other actors"
            + _fold_training({member["early_stopping"] for member in members}, config.epochs)
        )
        eval_results += _eval_results("unseen speakers (actor k-fold)", acc["mean"], ua["mean"], f1["mean"])
    if random:
        rows.append(
            f"| random 80/10/10 clip split (speakers shared), clean test | {random['n']} | {random['accuracy']:.1%} "
            f"| {random['unweighted_recall']:.1%} | {random['macro_f1']:.1%} |"
        )
        note = "Random split: the notebook's protocol, but the test set holds only clean clips."
        if "random_command" in results:  # measured by its own run of the same recipe and seed
            note += f" Measured by a separate run of the same recipe and seed: `{results['random_command']}`."
        notes.append(note)
        eval_results += _eval_results(
            "random 80/10/10 split", random["accuracy"], random["unweighted_recall"], random["macro_f1"]
        )
    robustness = "Not measured for this checkpoint (`python -m train.robustness` measures any checkpoint)."
    if actors and "robustness" in actors:
        robustness = (
            f"Each fold's {fold_model} on its own held-out actors, clean and under each condition made from the same "
            "clips by `train.channels` with seeds, noise and impulse responses disjoint from training's "
            "(`python -m train.robustness`); mean over folds. A clip the app refuses counts as wrong.\n\n"
            + format_table(actors["robustness"])
        )
    calibration = "Not calibrated: the probabilities are the model's own (temperature 1), and no verdict is 'not sure'."
    if "calibration" in results:
        c = results["calibration"]
        calibration = (
            f"A temperature of {c['temperature']:.2f} on the logits, fitted on the unseen-speaker folds' predictions "
            f"({c['n']} clips, `python -m train.calibrate`), takes the expected calibration error from "
            f"{c['ece_before']:.1%} to {c['ece_after']:.1%} (cross-validated: each fold calibrated by the others). "
            f'A verdict whose calibrated probability is below {c["not_sure_below"]:.0%} is shown as "not sure", '
            f"naming the two most probable emotions: {1 - c['share_sure']:.0%} of clips. Confident verdicts were "
            f"right {_percent(c['accuracy_sure'])} of the time, not-sure ones {_percent(c['accuracy_not_sure'])} "
            f"(the true emotion was one of the two named {_percent(c['top_two_accuracy_not_sure'])})."
        )
    per_class = "n/a"
    if actors:
        per_class = ", ".join(f"{k} {v:.0%}" for k, v in actors["pooled"]["per_class_recall"].items())
    augmentation = _channel_augmentation(config.channels)
    if config.time_shift:
        augmentation.append("random placement/crop in the window")
    if config.spec_augment:
        floor = ""
        if config.spec_augment_floor:
            floor = f", the bands at the clip's floor on {config.spec_augment_floor:.0%}"
        n_time = config.spec_augment_time_masks
        time_ms = SPEC_AUGMENT_MAX_FRAMES * HOP_LENGTH * 1000 // SAMPLE_RATE
        time_masks = f"{n_time} time mask{'s' * (n_time != 1)} of up to {time_ms} ms" if n_time else "no time masks"
        augmentation.append(
            f"SpecAugment ({SPEC_AUGMENT_FREQ_MASKS} frequency masks of up to {SPEC_AUGMENT_MAX_BANDS} bands, "
            f"{time_masks}{floor})"
        )
    if len(config.speed_factors) > 1:
        augmentation.append(f"speed perturbation x{', x'.join(str(f) for f in config.speed_factors)}")
    if config.mixup_alpha:
        augmentation.append(f"mixup (alpha {config.mixup_alpha})")

    card_data = ModelCardData(
        model_name="ser-parallel",
        language=["en"],
        license="cc-by-nc-sa-4.0",
        library_name="ser-parallel",
        pipeline_tag="audio-classification",
        tags=["speech-emotion-recognition", "audio-classification", "ravdess", "pytorch_model_hub_mixin"],
        datasets=["ravdess"],
        metrics=["accuracy", "recall", "f1"],
        eval_results=eval_results or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        model_name="ser-parallel: parallel CNN + Transformer speech emotion recognition",
        repo_url=REPO_URL,
        n_params=f"{model.n_params:,}",
        labels=", ".join(m.labels),
        results_table="\n".join(rows),
        results_notes="\n\n".join(notes),
        per_class=per_class,
        robustness=robustness,
        calibration=calibration,
        n_mels=m.n_mels,
        window_ms=f"{1000 * m.n_fft / SAMPLE_RATE:g}",
        cnn_desc=", ".join(f"{k}x{k} kernels" for k in m.cnn_kernel_sizes) + f"; channels {m.cnn_channels}",
        n_layers=m.n_layers,
        d_model=m.d_model,
        n_heads=m.n_heads,
        n_tokens=m.n_tokens,
        token_ms=10 * m.time_pool,
        token_pooling="a learnt weight per token" if m.attention_pooling else "their mean",
        log_mel_floor=_log_mel_floor(m),
        band_snr=_band_snr(m),
        cnn_input=_cnn_input(m),
        clip_seconds=m.clip_seconds,
        n_clips=results.get("n_clips", "?"),
        n_actors=results.get("n_actors", "?"),
        final_fit=_final_fit(final, members),
        wall_minutes=f"{final['wall_seconds'] / 60:.1f}",
        hardware=results.get("hardware", "CPU"),
        clips_per_second=f"{final['clips_per_second']:.0f}",
        augmentation="; ".join(augmentation),
        lr=config.lr,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
        auxiliary_losses=_auxiliary_losses(config),
        batch_size=config.batch_size,
        epochs=config.epochs,
        seed=_names(members),
        weight_average=_kept_weights(config, {member["early_stopping"] for member in members}),
        reproduce=_reproduce(results),
        citation=RAVDESS_CITATION,
    )
    card.save(Path(folder) / "README.md")
    return card


def _members(config, results: dict, n_models: int) -> list[dict]:
    """The shipped models' seeds and schedules: one, or an ensemble's (``train.ensemble`` records them; an older
    ensemble's members all share ``config``'s schedule)."""
    if "members" in results:
        return results["members"]
    seeds = results.get("seed", config.seed)
    seeds = seeds if isinstance(seeds, list) else [seeds] * n_models
    return [{"seed": seed, "early_stopping": config.early_stopping} for seed in seeds]


def _name(member: dict) -> str:
    return f"seed {member['seed']}" + ("" if member["early_stopping"] else " without early stopping")


def _names(members: list[dict]) -> str:
    return ", ".join(map(_name, members))


def _fold_training(early_stopping: set[bool], epochs: int) -> str:
    """How each fold's models used the training actors, ending the sentence that names them."""
    if early_stopping == {True}:
        return " minus one man and one woman used for early stopping."
    if early_stopping == {False}:
        return f", {epochs} epochs."
    return (
        "; a model with early stopping held one man and one woman of them out to stop on, one without trained on "
        f"them too, for {epochs} epochs."
    )


def _final_fit(final: dict, members: list[dict]) -> str:
    """How the shipped weights were fitted, in words: one model, or each model of an ensemble."""
    fits = final.get("members", [final])
    hows = []
    for fit in fits:
        if fit["val_actors"]:
            hows.append(
                f"trained on every actor except actors {fit['val_actors']}, held out for early stopping on UA; "
                f"best epoch {fit['best_epoch']} of {fit['epochs_run']}"
            )
        else:
            hows.append(
                f"trained on every actor for a fixed {fit['epochs_run']} epochs (no early stopping), the last kept"
            )
    if len(fits) == 1:
        return hows[0]
    each = "; ".join(f"{_name(member)}: {how}" for member, how in zip(members, hows))
    return f"an ensemble of {len(fits)} models, the mean of their probabilities ({each})"


def _kept_weights(config, early_stopping: set[bool]) -> str:
    """Which weights were shipped: an average, the best epoch's, or the last epoch's."""
    if config.ema_decay:
        return f"the weights validated and shipped are an exponential moving average (decay {config.ema_decay})"
    if early_stopping == {True}:
        return "the weights shipped are the best epoch's own"
    if early_stopping == {False}:
        return "the weights shipped are the last epoch's own"
    return "the weights shipped are each model's best epoch's own (the last epoch's, without early stopping)"


def _cnn_input(m) -> str:
    """How the CNN branches pool the spectrogram before their first convolution, in words."""
    patch = f"pooled {m.cnn_input_pool}x{m.cnn_input_pool}"
    return {
        "mean": f"{patch} by its mean",
        "max": f"{patch} by its largest value",
        "mean+max": f"{patch} by its mean and by its largest value (two channels)",
        "max-freq": f"{patch} by the largest across frequency of its means across time",
    }[m.cnn_input_pooling]


def _log_mel_floor(m) -> str:
    """The floor under the log-mel, in words; empty when there is none."""
    if m.dynamic_range_db is None:
        return ""
    return f", floored {m.dynamic_range_db:.0f} dB below the window's peak"


def _band_snr(m) -> str:
    """The noise-aware input, in words; empty when the model reads the log-mel alone."""
    if m.band_snr_quantile is None:
        return ""
    bounded = "" if m.band_snr_range_db is None else f", within {m.band_snr_range_db:.0f} dB of the window's peak"
    return (
        ", read by every branch beside each value's height above its band's noise floor (the band's"
        f" {m.band_snr_quantile:.0%} quantile over the window{bounded})"
    )


def _auxiliary_losses(config) -> str:
    """What the training loss adds to cross-entropy, in words; empty when nothing."""
    losses = []
    if config.denoise_weight:
        losses.append(
            f"a clean-speech loss (weight {config.denoise_weight}): a decoder used in training only predicts the "
            "clean recording's log-mel from the Transformer's tokens, and is not shipped"
        )
    if config.consistency_weight:
        losses.append(f"a clean/degraded consistency loss (weight {config.consistency_weight})")
    if config.teachers:
        losses.append(f"distillation from {len(config.teachers)} teacher runs (weight {config.distill_weight})")
    return "".join(f"; plus {loss}" for loss in losses)


def _reproduce(results: dict) -> str:
    """The commands that made the checkpoint: the training run, or each member's and then the ensemble's."""
    commands = [*results.get("member_commands", []), results.get("command", "python -m train --data DIR")]
    return ", then ".join(f"`{c.replace(' --resume', '')}`" for c in commands)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _noise_kinds(noise_types: list[str]) -> str:
    """The noise kinds drawn from, each with its share when a kind is listed more than once to draw it more often."""
    counts = Counter(noise_types)
    if len(set(counts.values())) == 1:
        return ", ".join(counts)
    return ", ".join(f"{kind} {count / len(noise_types):.0%}" for kind, count in counts.items())


def _channel_augmentation(channels: ChannelConfig) -> list[str]:
    """The channel augmentations a run used, in words, each with the share of clips it touched."""
    parts = []
    if channels.reverb_prob:
        parts.append(f"room reverberation (RT60 {channels.rt60[0]}-{channels.rt60[1]} s) on {channels.reverb_prob:.0%}")
    if channels.noise_prob:
        kinds = _noise_kinds(channels.noise_types)
        snr = f"{channels.snr_db[0]:.0f} to {channels.snr_db[1]:.0f} dB SNR"  # "-5-30 dB" would misread
        curriculum = ""
        if channels.snr_curriculum > 0:
            curriculum = (
                f", the lowest SNR falling from {channels.snr_db[1]:.0f} to {channels.snr_db[0]:.0f} dB over the first"
                f" {channels.snr_curriculum:.0%} of the schedule"
            )
        parts.append(f"noise ({kinds}) at {snr} on {channels.noise_prob:.0%}{curriculum}")
    if channels.mic_prob:
        parts.append(
            f"microphone response (high-pass {channels.mic_highpass_hz[0]:.0f}-{channels.mic_highpass_hz[1]:.0f} Hz,"
            f" low-pass {channels.mic_lowpass_hz[0] / 1000:.0f}-{channels.mic_lowpass_hz[1] / 1000:.0f} kHz,"
            f" tilt {channels.mic_tilt_db[0]:+.0f} to {channels.mic_tilt_db[1]:+.0f} dB per octave)"
            f" on {channels.mic_prob:.0%}"
        )
    if channels.hiss_prob:
        snr = f"{channels.hiss_snr_db[0]:.0f}-{channels.hiss_snr_db[1]:.0f} dB below the voice"
        parts.append(f"microphone hiss (white) at {snr} on {channels.hiss_prob:.0%}")
    if channels.telephone_prob:
        parts.append(f"telephone band (300-3400 Hz, 8 kHz, mu-law) on {channels.telephone_prob:.0%}")
    if channels.codec_prob:
        parts.append(f"MP3 / Opus at 8-9 kbit/s on {channels.codec_prob:.0%}")
    if channels.gain_prob:
        parts.append(
            f"gain {channels.gain_db[0]:.0f} to +{channels.gain_db[1]:.0f} dB with clipping on {channels.gain_prob:.0%}"
        )
    if parts:
        parts[0] = "applied to the raw recording before trimming and levelling, as the app receives it: " + parts[0]
    return parts


def _eval_results(split: str, accuracy: float, unweighted_recall: float, macro_f1: float) -> list[EvalResult]:
    common = dict(
        task_type="audio-classification", dataset_type="ravdess", dataset_name="RAVDESS speech", dataset_split=split
    )
    return [
        EvalResult(**common, metric_type="accuracy", metric_value=round(accuracy, 4)),
        EvalResult(
            **common,
            metric_type="recall",
            metric_name="unweighted average recall",
            metric_value=round(unweighted_recall, 4),
        ),
        EvalResult(**common, metric_type="f1", metric_name="macro F1", metric_value=round(macro_f1, 4)),
    ]
