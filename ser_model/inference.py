"""Audio in, emotion out: the inference API the app and scripts call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import (
    HOP_LENGTH,
    SAMPLE_RATE,
    AudioInput,
    load_audio,
    pad_or_trim,
    prepare_speech,
    split_utterances,
    voice_activity,
    window_starts,
)
from .fused import fuse
from .model import EmotionEnsemble, EmotionNet, floor_log_mel

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "ser-parallel"
MAX_WINDOWS_PER_BATCH = 32  # bounds memory on long recordings; a 5-minute file is 200 windows


@dataclass
class Utterance:
    start: float  # seconds from the start of the recording
    end: float
    label: str  # the most probable emotion of this utterance
    probabilities: dict[str, float]
    sure: bool  # False when the calibrated probability of `label` is below the model's `not_sure_below`


@dataclass
class Prediction:
    label: str  # the most probable emotion over the whole clip
    probabilities: dict[str, float]  # every emotion's clip-level probability (calibrated), summing to 1
    sure: bool  # False when the evidence is weak: show "not sure", naming the two most probable emotions
    log_mel: np.ndarray  # (n_mels, n_frames) dB, the first (or only) window, floored as the network reads it
    attentions: np.ndarray  # (n_layers, n_heads, n_tokens, n_tokens) for that window
    window_starts: np.ndarray  # (n_windows,) seconds from the start of the trimmed speech
    window_probabilities: np.ndarray  # (n_windows, n_classes): the emotion timeline
    speech: np.ndarray  # the trimmed, levelled 16 kHz audio the model heard
    utterances: list[Utterance]  # each stretch of voice between pauses, scored on its own


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class EmotionRecognizer:
    """Predicts the emotion in a recording with an :class:`EmotionNet` (or an :class:`EmotionEnsemble` of them).

    >>> recognizer = EmotionRecognizer.from_pretrained("checkpoints/ser-parallel")
    >>> recognizer.predict("speech.wav").label
    'happy'
    """

    def __init__(self, model: EmotionNet | EmotionEnsemble, device: str | torch.device = "auto"):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        # Predictions run on a fused copy (batch norms folded in, an ensemble's members run as one network; the
        # same outputs, a pair ~25% faster); `model` stays as it was, to save or train. So a recognizer scores
        # the weights it was built with.
        self._fused_model = fuse(self.model)
        self.labels = list(model.config.labels)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path = DEFAULT_CHECKPOINT, *, revision: str | None = None, device: str = "auto"
    ) -> EmotionRecognizer:
        """Load from a local checkpoint folder or a Hub repo id; raises ``ModelLoadError`` on failure."""
        return cls(EmotionNet.from_pretrained(name_or_path, revision=revision), device)

    @torch.inference_mode()
    def predict(self, audio: AudioInput, sample_rate: int | None = None) -> Prediction:
        """Classify the emotion of speech in ``audio``.

        ``audio`` is anything :func:`ser_model.audio.load_audio` accepts. Leading and trailing
        non-speech is trimmed and the level normalised; speech longer than one model window is scored
        in back-to-back windows (the last one ending with the audio) whose probabilities are averaged.

        Raises ``ser_model.AudioError`` with a plain-English message for unusable audio.
        """
        samples = load_audio(audio, sample_rate)
        activity = voice_activity(samples)  # judged once, for the whole recording and for its utterances
        prediction = self.predict_speech(prepare_speech(samples, activity))
        utterances = split_utterances(samples, activity)
        if len(utterances) == 1:  # the recording's own verdict: no second look at the same voice
            start, end, _ = utterances[0]
            prediction.utterances = [Utterance(start, end, prediction.label, prediction.probabilities, prediction.sure)]
        else:
            prediction.utterances = [
                Utterance(start, end, *self._verdict(self._probabilities(self._window_logits(speech)).mean(0)))
                for start, end, speech in utterances
            ]
        return prediction

    @torch.inference_mode()
    def predict_speech(self, speech: np.ndarray) -> Prediction:
        """:meth:`predict` for speech already prepared by :func:`ser_model.audio.prepare_speech`; its one
        utterance spans the whole speech."""
        config = self.model.config
        speech = pad_or_trim(speech, config.n_samples) if len(speech) < config.n_samples else speech
        windows = self._windows(speech)
        # The spectrogram and attention maps are shown for the first window only, so only it pays for the maps.
        first = self._fused_model.classify(windows[:1], return_attention=True)
        rest = windows[1:].split(MAX_WINDOWS_PER_BATCH) if len(windows) > 1 else ()
        logits = [first.logits] + [self._fused_model.classify(chunk).logits for chunk in rest]
        window_probabilities = self._probabilities(torch.cat(logits).cpu())  # (n_windows, n_classes)
        label, probabilities, sure = self._verdict(window_probabilities.mean(0))
        shown = windows[:1]
        if config.dynamic_range_db is not None:  # "what the model heard" shows no detail below the floor it reads
            shown = floor_log_mel(shown, config.dynamic_range_db)
        return Prediction(
            label=label,
            probabilities=probabilities,
            sure=sure,
            log_mel=shown[0].float().cpu().numpy(),
            attentions=first.attentions[0].float().cpu().numpy(),
            window_starts=window_starts(len(speech), config.n_samples) / SAMPLE_RATE,
            window_probabilities=window_probabilities.numpy(),
            speech=speech,
            utterances=[Utterance(0.0, len(speech) / SAMPLE_RATE, label, probabilities, sure)],
        )

    def _windows(self, speech: np.ndarray) -> torch.Tensor:
        """One log-mel of the whole speech cut into windows (n_windows, n_mels, n_frames): each sample is
        transformed once."""
        config = self.model.config
        speech = pad_or_trim(speech, config.n_samples) if len(speech) < config.n_samples else speech
        log_mel = self._fused_model.frontend(torch.from_numpy(speech).to(self.device)[None])[0]  # (n_mels, T)
        starts = window_starts(len(speech), config.n_samples) // HOP_LENGTH
        return torch.stack([log_mel[:, s : s + config.n_frames] for s in starts])

    def _window_logits(self, speech: np.ndarray) -> torch.Tensor:
        windows = self._windows(speech)
        return torch.cat(
            [self._fused_model.classify(chunk).logits for chunk in windows.split(MAX_WINDOWS_PER_BATCH)]
        ).cpu()

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities (n, n_classes) from logits (n, n_classes)."""
        return torch.softmax(logits.float() / self.model.config.temperature, dim=-1)

    def _verdict(self, probabilities: torch.Tensor) -> tuple[str, dict[str, float], bool]:
        """The most probable label, every label's probability, and whether the model is sure of it."""
        top = int(probabilities.argmax())
        sure = float(probabilities[top]) >= self.model.config.not_sure_below
        return self.labels[top], {k: float(p) for k, p in zip(self.labels, probabilities)}, sure
