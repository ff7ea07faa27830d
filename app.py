"""Speech emotion recognition demo: record or upload a voice, see what the model hears and where it listens.

    python app.py [--model-repo USER/REPO] [--revision REV] [--examples RAVDESS_DIR]

Environment: SER_MODEL_REPO, SER_MODEL_REVISION, SER_EXAMPLES_DIR; GRADIO_SERVER_NAME/GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import gradio as gr
import numpy as np
from huggingface_hub import ModelCard

from ser_model import DEFAULT_CHECKPOINT, AudioError, EmotionRecognizer, ModelLoadError, Prediction
from ser_model.audio import SAMPLE_RATE
from ser_model.visualize import plot_attention_maps, plot_spectrogram, plot_timeline

try:  # On a ZeroGPU Space the GPU is attached only inside functions wrapped by spaces.GPU.
    import spaces

    on_gpu = spaces.GPU
except ImportError:

    def on_gpu(fn):
        return fn


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
logger = logging.getLogger("app")

EMOJI = {
    "neutral": "😐",
    "calm": "😌",
    "happy": "😄",
    "sad": "😢",
    "angry": "😠",
    "fearful": "😨",
    "disgust": "🤢",
    "surprised": "😲",
}
CONCURRENCY = int(os.environ.get("SER_CONCURRENCY", 2))  # 2 CPU cores on a free Space: one request per core


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument(
        "--model-repo",
        default=os.environ.get("SER_MODEL_REPO"),
        help="Hub repo id (or local folder) of the weights; unset or unreachable: the shipped checkpoint",
    )
    parser.add_argument("--revision", default=os.environ.get("SER_MODEL_REVISION"), help="pinned Hub commit or tag")
    parser.add_argument(
        "--examples",
        default=os.environ.get("SER_EXAMPLES_DIR"),
        help="a RAVDESS folder to offer example clips from (the project ships no audio)",
    )
    return parser.parse_known_args()[0]  # known only: hosts such as Spaces may pass their own flags


def load_recognizer(repo_id: str | None, revision: str | None) -> tuple[EmotionRecognizer, str, str]:
    """The model from the Hub when configured and reachable, else the shipped checkpoint folder."""
    if repo_id and Path(repo_id).is_dir():
        return (
            EmotionRecognizer.from_pretrained(repo_id),
            f"the local folder `{repo_id}`",
            str(Path(repo_id) / "README.md"),
        )
    if repo_id:
        try:
            recognizer = EmotionRecognizer.from_pretrained(repo_id, revision=revision)
            return recognizer, f"the Hub repo `{repo_id}` at `{revision or 'main'}`", repo_id
        except ModelLoadError as e:
            logger.warning("Hub model unavailable, falling back to the shipped checkpoint: %s", e)
            fallback = f"the shipped checkpoint (the Hub repo `{repo_id}` could not be reached)"
    else:
        fallback = "the shipped checkpoint (no Hub repo configured)"
    return EmotionRecognizer.from_pretrained(DEFAULT_CHECKPOINT), fallback, str(DEFAULT_CHECKPOINT / "README.md")


def model_summary(card_source: str) -> str:
    """The headline numbers from the model card's evaluation results, with their protocols."""
    try:
        results = ModelCard.load(card_source).data.eval_results or []
    except Exception as e:  # a missing or unreachable card must not stop the demo
        logger.warning("No model card at %s: %s", card_source, e)
        return "The model card could not be read, so no accuracy is shown."
    lines = [f"- {r.metric_name or r.metric_type} on {r.dataset_split}: **{r.metric_value:.1%}**" for r in results]
    return "\n".join(lines) or "The model card lists no results."


def example_clips(folder: str | None, per_emotion: int = 1) -> list[list[str]]:
    """A few RAVDESS clips per emotion (strong intensity where it exists), or none without a folder."""
    if not folder or not Path(folder).is_dir():
        return []
    clips = []
    for code in range(1, 9):
        intensity = "01" if code == 1 else "02"  # neutral has no strong take
        found = sorted(Path(folder).rglob(f"03-01-{code:02d}-{intensity}-*"))
        clips += [[str(p)] for p in found[:: max(len(found) // per_emotion, 1)][:per_emotion]]
    return clips


args = parse_args()
recognizer, model_source, card_source = load_recognizer(args.model_repo, args.revision)
recognizer.predict((SAMPLE_RATE, np.sin(np.linspace(0, 2000, 2 * SAMPLE_RATE)).astype(np.float32)))  # warm-up
logger.info("Model from %s on %s", model_source, recognizer.device)
MODEL_SUMMARY = model_summary(card_source)
EXAMPLES = example_clips(args.examples)


@on_gpu
def recognize(audio_path: str | None) -> Prediction:
    if audio_path is None:
        raise gr.Error("No audio yet: upload a file or record your voice, then try again.")
    try:
        return recognizer.predict(audio_path)
    except AudioError as e:
        raise gr.Error(str(e)) from None


def predict(audio_path: str | None) -> dict[str, float]:
    """API: the probability of each emotion; the top one is the prediction."""
    return recognize(audio_path).probabilities


def analyze(audio_path: str | None):
    """UI: the verdict, probabilities, spectrogram with attention, attention maps and timeline."""
    prediction = recognize(audio_path)
    confidence = prediction.probabilities[prediction.label]
    verdict = (
        f"<div class='verdict'>{EMOJI.get(prediction.label, '')} {prediction.label}"
        f"<span>{confidence:.0%} confident</span></div>"
    )
    long_audio = len(prediction.window_starts) > 1
    return (
        verdict,
        prediction.probabilities,
        plot_spectrogram(prediction),
        plot_attention_maps(prediction),
        gr.Plot(plot_timeline(prediction) if long_audio else None, visible=long_audio),
    )


HOW_IT_WORKS = """
**1. Listen.** Your recording is converted to 16 kHz mono, the silence before and after your voice is cut,
and its level is evened out, so a whisper and a shout are heard alike.

**2. Look.** The audio becomes a *log-mel spectrogram*: time left to right, pitch bottom to top, loudness as
colour. It is a picture of your voice.

**3. Decide.** Three networks read it side by side. Two *convolutional* networks scan it like an image for
patterns of pitch and energy; a *Transformer* reads it as a sequence and, through *attention*, lets every
moment look at every other. Their findings are combined into a probability for each of 8 emotions.

**The attention maps** show, for each layer and head of the Transformer, how much each moment (row) looked at
each other moment (column). The curve under the spectrogram rolls all of them up into one line: the moments
that shaped the answer most. Clips longer than 3 s are judged in 3-s windows, shown as a timeline.
"""

ABOUT = f"""
**Model:** a parallel CNN + Transformer network ({recognizer.model.n_params:,} parameters) trained from scratch on
RAVDESS, after *Parallel is All You Want* (2020). Loaded from {model_source}, running on `{recognizer.device}`.

**How well it works**, from the model card:

{MODEL_SUMMARY}

*Unseen speakers* means the test voices were never heard in training: that is what you should expect here.

**Limits.** Trained on acted emotion from 20 young North American English speakers saying two short sentences.
Real conversation, other languages and accents, children and noisy rooms will score lower. It knows only
these 8 emotions and always picks one. **Do not use it to make decisions about people.**

**Data and license.** RAVDESS (Livingstone & Russo, 2018), CC BY-NC-SA 4.0; the weights carry the same terms.
"""

CSS = """
.verdict {font-size: 2.4rem; font-weight: 700; text-align: center; padding: 0.4rem 0;}
.verdict span {display: block; font-size: 1rem; font-weight: 400; opacity: 0.75;}
"""

with gr.Blocks(title="Speech emotion recognition") as demo:
    gr.Markdown(
        "# 🎙️ What emotion is in your voice?\nRecord a sentence or upload a clip. The model shows what it "
        "heard, where it listened, and which of 8 emotions it recognises."
    )
    with gr.Row():
        with gr.Column(scale=2):
            audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Your voice")
            button = gr.Button("Recognise emotion", variant="primary")
            verdict = gr.HTML("<div class='verdict'>🎧<span>waiting for audio</span></div>")
            probabilities = gr.Label(num_top_classes=8, label="Probability of each emotion", show_heading=False)
            if EXAMPLES:
                gr.Examples(EXAMPLES, inputs=audio, label="RAVDESS examples (one per emotion)")
        with gr.Column(scale=3):
            spectrogram = gr.Plot(
                label="Spectrogram and attention over time", format="png", show_label=False, elem_id="spectrogram"
            )
            attention = gr.Plot(
                label="Attention maps (layer × head)", format="png", show_label=False, elem_id="attention"
            )
    timeline = gr.Plot(label="Emotion timeline", format="png", show_label=False, visible=False, elem_id="timeline")
    with gr.Accordion("How it works", open=False):
        gr.Markdown(HOW_IT_WORKS)
    with gr.Accordion("About the model", open=False):
        gr.Markdown(ABOUT)
    gr.Markdown(f"<small>Model: {model_source} · device: `{recognizer.device}`</small>")

    gr.on(
        triggers=[button.click, audio.stop_recording, audio.upload],
        fn=analyze,
        inputs=audio,
        outputs=[verdict, probabilities, spectrogram, attention, timeline],
        api_name="analyze",
    )
    # The API endpoint: label and probabilities only, no figures, so clients get a fast answer.
    api_label = gr.Label(visible=False)
    gr.Button(visible=False).click(predict, inputs=audio, outputs=api_label, api_name="predict")

demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)

if __name__ == "__main__":
    demo.launch(css=CSS, allowed_paths=[args.examples] if args.examples else None)
