"""Speech emotion recognition with a parallel CNN + Transformer network over log-mel spectrograms."""

from .audio import AudioError, load_audio, prepare_speech
from .inference import DEFAULT_CHECKPOINT, EmotionRecognizer, Prediction, Utterance, resolve_device
from .model import EMOTIONS, EmotionEnsemble, EmotionNet, ModelConfig, ModelLoadError, ModelOutput

__all__ = [
    "EMOTIONS",
    "DEFAULT_CHECKPOINT",
    "AudioError",
    "EmotionEnsemble",
    "EmotionNet",
    "EmotionRecognizer",
    "ModelConfig",
    "ModelLoadError",
    "ModelOutput",
    "Prediction",
    "Utterance",
    "load_audio",
    "prepare_speech",
    "resolve_device",
]
