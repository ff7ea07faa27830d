"""Speech emotion recognition demo: record or upload a voice, see what the model hears and where it listens.

    python app.py [--model-repo USER/REPO] [--revision REV] [--examples RAVDESS_DIR]

The weights come from the project's Hub repo (DEFAULT_MODEL_REPO) when it answers within HUB_TIMEOUT_SECONDS,
else from the shipped checkpoint, and the page says which. An empty --model-repo skips the Hub.
Environment: SER_MODEL_REPO, SER_MODEL_REVISION, SER_HUB_TIMEOUT, SER_EXAMPLES_DIR; GRADIO_SERVER_NAME/PORT.
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
import os
from dataclasses import asdict
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from ser_model import DEFAULT_CHECKPOINT, AudioError, EmotionRecognizer, ModelLoadError, Prediction
from ser_model.audio import SAMPLE_RATE, AudioInput
from ser_model.streaming import UPDATE_SECONDS, LiveTake
from ser_model.visualize import plot_timeline, render_attention_maps, render_spectrogram, to_jpeg

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
# Requests handled at once. On a free Space's 2 cores, one at a time with both cores each served a class of 20
# fastest (scripts/loadtest.py: p95 2.3 s against 2.8 s for two at once): the server's own work needs a core too.
CONCURRENCY = int(os.environ.get("SER_CONCURRENCY", 1))
torch.set_num_threads(max(1, (os.cpu_count() or 1) // CONCURRENCY))  # each request its share of the cores
DEFAULT_MODEL_REPO = "ser-parallel/ser-parallel-ravdess"  # the published weights
# Without an answer from the Hub in this time, a Space or classroom laptop starts on the shipped weights instead.
HUB_TIMEOUT_SECONDS = float(os.environ.get("SER_HUB_TIMEOUT", 10))
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_UPLOAD = "60mb"  # the longest audio accepted, 5 minutes of 48 kHz 16-bit stereo WAV, is 55 MB


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument(
        "--model-repo",
        default=os.environ.get("SER_MODEL_REPO", DEFAULT_MODEL_REPO),
        help=f"Hub repo id (or local folder) of the weights (default {DEFAULT_MODEL_REPO}); "
        "empty or unreachable: the shipped checkpoint",
    )
    parser.add_argument("--revision", default=os.environ.get("SER_MODEL_REVISION"), help="pinned Hub commit or tag")
    parser.add_argument(
        "--examples",
        default=os.environ.get("SER_EXAMPLES_DIR"),
        help="a RAVDESS folder to offer one more clip per emotion from, beside the shipped examples/",
    )
    return parser.parse_known_args()[0]  # known only: hosts such as Spaces may pass their own flags


def load_recognizer(repo_id: str | None, revision: str | None) -> tuple[EmotionRecognizer, str, str, str | None]:
    """The model from the Hub repo (or local folder) when it loads in time, else the shipped checkpoint.

    Returns the recognizer, where it came from, its model card, and why the Hub was not used (None if it was).
    """
    if repo_id and Path(repo_id).is_dir():
        folder = Path(repo_id)
        return (
            EmotionRecognizer.from_pretrained(folder),
            f"the local folder `{repo_id}`",
            str(folder / "README.md"),
            None,
        )
    if not repo_id:
        fallback = "no Hub repo is configured"
    else:
        try:
            folder = _download(repo_id, revision)
            recognizer = EmotionRecognizer.from_pretrained(folder)
            return recognizer, f"the Hub repo `{repo_id}` at `{revision or 'main'}`", str(folder / "README.md"), None
        except (ModelLoadError, HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as e:
            # Offline, unreachable, silent past the timeout, or no such repo or file: all land here.
            logger.warning("Hub model unavailable, falling back to the shipped checkpoint: %s", e)
            answered = isinstance(e, HfHubHTTPError) or isinstance(e.__cause__, HfHubHTTPError)
            reason = "it has no usable weights there" if answered else "it could not be reached"
            fallback = f"the Hub repo `{repo_id}` was not used: {reason}"
    recognizer = EmotionRecognizer.from_pretrained(DEFAULT_CHECKPOINT)
    return recognizer, "the shipped checkpoint", str(DEFAULT_CHECKPOINT / "README.md"), fallback


def _download(repo_id: str, revision: str | None) -> Path:
    """The repo's config, weights and card in the local Hub cache; offline mode (HF_HUB_OFFLINE=1) reads the cache.

    The downloads retry a silent server with backoff for minutes, so one request with a deadline asks first
    whether the Hub answers at all.
    """
    if not constants.HF_HUB_OFFLINE:
        try:
            HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_SECONDS)
        except HfHubHTTPError:
            raise  # the Hub answered: no such repo or revision, or no access
        except Exception as e:  # the transport's own errors: refused, timed out, no route, no DNS
            raise ConnectionError(f"no answer from the Hub within {HUB_TIMEOUT_SECONDS:.0f} s: {e}") from e
    names = [constants.CONFIG_NAME, constants.SAFETENSORS_SINGLE_FILE, constants.REPOCARD_NAME]
    return Path([hf_hub_download(repo_id, name, revision=revision) for name in names][0]).parent


def model_summary(card_source: str) -> str:
    """The headline numbers from the model card's evaluation results, with their protocols."""
    try:
        results = ModelCard.load(card_source).data.eval_results or []
    except Exception as e:  # a missing or unreachable card must not stop the demo
        logger.warning("No model card at %s: %s", card_source, e)
        return "The model card could not be read, so no accuracy is shown."
    lines = [f"- {r.metric_name or r.metric_type} on {r.dataset_split}: **{r.metric_value:.1%}**" for r in results]
    return "\n".join(lines) or "The model card lists no results."


def example_clips(folder: str | Path | None, per_emotion: int = 1) -> list[list[str]]:
    """A few RAVDESS clips per emotion (strong intensity where it exists), or none without a folder."""
    if not folder or not Path(folder).is_dir():
        return []
    clips = []
    for code in range(1, 9):
        intensity = "01" if code == 1 else "02"  # neutral has no strong take
        found = sorted(Path(folder).rglob(f"03-01-{code:02d}-{intensity}-*"))
        clips += [[str(p)] for p in found[:: max(len(found) // per_emotion, 1)][:per_emotion]]
    return clips


def example_label(path: str) -> str:
    """ "😠 angry (actor 05)" from a RAVDESS file name."""
    fields = Path(path).stem.split("-")
    emotion = list(EMOJI)[int(fields[2]) - 1]
    return f"{EMOJI[emotion]} {emotion} (actor {fields[6]})"


args = parse_args()
recognizer, model_source, card_source, hub_fallback = load_recognizer(args.model_repo, args.revision)
# Warm-up: the first prediction and figure pay for lazy initialisation (and the pitch tracker's JIT compile).
_syllables = np.sin(np.linspace(0, 2000, 2 * SAMPLE_RATE)) * (np.sin(np.linspace(0, 8 * np.pi, 2 * SAMPLE_RATE)) > 0)
_warm_up = recognizer.predict((SAMPLE_RATE, _syllables.astype(np.float32)))
render_spectrogram(_warm_up)
render_attention_maps(_warm_up)
logger.info("Model from %s on %s", model_source, recognizer.device)
MODEL_SUMMARY = model_summary(card_source)
EXAMPLES = example_clips(EXAMPLES_DIR) + example_clips(args.examples)


@on_gpu
def recognize(audio: AudioInput | None) -> Prediction:
    if audio is None:
        raise gr.Error("No audio yet: upload a file or record your voice, then try again.")
    try:
        return recognizer.predict(audio)
    except AudioError as e:
        raise gr.Error(str(e)) from None


def predict(audio_path: str | None) -> dict[str, float]:
    """API: the probability of each emotion; the top one is the prediction."""
    return recognize(audio_path).probabilities


def analyze(audio: AudioInput | None):
    """UI: the verdict, probabilities, spectrogram with pitch, loudness and attention, attention maps, and the
    emotion of each utterance when there are several."""
    prediction = recognize(audio)
    several = len(prediction.utterances) > 1
    spectrogram_alt = f"Log-mel spectrogram with pitch, loudness and attention over time; verdict {prediction.label}"
    return (
        verdict_html(prediction),
        prediction.probabilities,
        figure_html(render_spectrogram(prediction), spectrogram_alt),
        figure_html(render_attention_maps(prediction), "Attention maps of every layer and head"),
        gr.Plot(plot_timeline(prediction) if several else None, visible=several),
    )


def utterances(audio_path: str | None) -> list[dict]:
    """API: each utterance (voice between pauses) with its time span in seconds, emotion and probabilities."""
    return [asdict(utterance) for utterance in recognize(audio_path).utterances]


def verdict_html(prediction: Prediction) -> str:
    """The headline: one utterance's emotion and confidence, or the emotion of each utterance in turn; where the
    model is not sure, the two emotions it hesitates between."""
    if len(prediction.utterances) == 1:
        if not prediction.sure:
            first, second = _top_two(prediction.probabilities)
            return (
                f"<div class='verdict'>🤔 not sure: {first} or {second}?<span>{first} "
                f"{prediction.probabilities[first]:.0%}, {second} {prediction.probabilities[second]:.0%}</span></div>"
            )
        confidence = prediction.probabilities[prediction.label]
        return (
            f"<div class='verdict'>{EMOJI.get(prediction.label, '')} {prediction.label}"
            f"<span>{confidence:.0%} confident</span></div>"
        )
    items = []
    for u in prediction.utterances:
        span = f"{u.start:.1f}-{u.end:.1f} s"
        if u.sure:
            items.append(
                f"<li>{EMOJI.get(u.label, '')} {u.label} <small>{span}, {u.probabilities[u.label]:.0%}</small></li>"
            )
        else:
            first, second = _top_two(u.probabilities)
            items.append(f"<li>🤔 {first} or {second}? <small>{span}, not sure</small></li>")
    return f"<div class='verdict'><span>{len(items)} utterances</span><ol>{''.join(items)}</ol></div>"


def _top_two(probabilities: dict[str, float]) -> list[str]:
    return sorted(probabilities, key=probabilities.get, reverse=True)[:2]


def start_take() -> tuple[LiveTake, str, None]:
    """Live: a new take, with an empty strip and meter."""
    return LiveTake(recognizer), LIVE_PLACEHOLDER, None


def follow_take(chunk: tuple[int, np.ndarray] | None, take: LiveTake | None):
    """Live: add the latest microphone chunk; about twice a second, a new meter reading and strip."""
    take = take or LiveTake(recognizer)
    if chunk is None or len(chunk[1]) == 0:
        return take, gr.skip(), gr.skip()
    try:
        update = take.add(chunk)
    except AudioError:  # a malformed chunk: wait for the next
        return take, gr.skip(), gr.skip()
    if update is None:
        return take, gr.skip(), gr.skip()
    return take, live_strip_html(take), update.probabilities or {"(silence)": 1.0}


def finish_take(take: LiveTake | None):
    """Live: when the take stops, the full analysis of all of it, as for a recording."""
    if take is None or take.received == 0:
        raise gr.Error("The take was empty: allow the microphone, speak, then stop.")
    return analyze((SAMPLE_RATE, take.latest()))


def live_strip_html(take: LiveTake) -> str:
    """The take so far, one symbol per meter reading (the latest 40): an emoji for an emotion, a dot for a pause."""
    symbols = [
        EMOJI.get(max(u.probabilities, key=u.probabilities.get), "?") if u.probabilities else "·"
        for u in list(take.timeline)[-40:]
    ]
    return f"<div class='live-strip' data-readings='{len(take.timeline)}'>{' '.join(symbols)}</div>"


def compare(path_a: str | None, path_b: str | None) -> str:
    """Compare: both verdicts, each emotion's probability in both takes, and both spectrograms on the same axes
    (the figures' scales are fixed, so the two read alike)."""
    if path_a is None or path_b is None:
        raise gr.Error("Compare needs two takes: record or upload take A and take B.")
    a, b = recognize(path_a), recognize(path_b)

    def cell(p: float, take: str) -> str:
        return f"<td><div class='bar {take}' style='width:{100 * p:.0f}%'></div>{p:.0%}</td>"

    def row(label: str) -> str:
        pa, pb = a.probabilities[label], b.probabilities[label]
        name = f"<td>{EMOJI.get(label, '')} {label}</td>"
        return f"<tr>{name}{cell(pa, 'a')}{cell(pb, 'b')}<td>{100 * (pb - pa):+.0f}</td></tr>"

    rows = "".join(row(label) for label in a.probabilities)
    return (
        "<div class='compare'>"
        f"<div class='takes'><div><b>Take A</b>{verdict_html(a)}</div><div><b>Take B</b>{verdict_html(b)}</div></div>"
        f"<table><tr><th>emotion</th><th>take A</th><th>take B</th><th>B - A (points)</th></tr>{rows}</table>"
        f"<b>Take A</b>{figure_html(render_spectrogram(a), 'Spectrogram of take A')}"
        f"<b>Take B</b>{figure_html(render_spectrogram(b), 'Spectrogram of take B')}"
        "</div>"
    )


def figure_html(image: np.ndarray, alt: str) -> str:
    """A figure inline in the page: it arrives with the answer, with no second request for a file."""
    data = base64.b64encode(to_jpeg(image)).decode("ascii")
    return f'<img class="figure" src="data:image/jpeg;base64,{data}" alt="{html.escape(alt)}">'


N_MODELS = recognizer.model.config.n_models
NETWORKS = (
    f"an ensemble of {N_MODELS} parallel CNN + Transformer networks trained separately with one recipe, whose "
    f"probabilities are averaged ({recognizer.model.n_params:,} parameters in all)"
    if N_MODELS > 1
    else f"a parallel CNN + Transformer network ({recognizer.model.n_params:,} parameters)"
)

ENSEMBLE_NOTE = (
    f" The model here is {N_MODELS} such networks, trained separately (from different random starts, or on "
    "different voices), whose probabilities are averaged: they disagree on about a quarter of voices, and their "
    "average is right more often than one network alone. The attention maps are the first network's."
    if N_MODELS > 1
    else ""
)

HOW_IT_WORKS = f"""
**1. Listen.** Your recording is converted to 16 kHz mono, the silence before and after your voice is cut,
and its level is evened out, so a whisper and a shout are heard alike.

**2. Look.** The audio becomes a *log-mel spectrogram*: time left to right, frequency bottom to top, loudness
as colour. It is a picture of your voice. The light-blue line on it is your *pitch* (the fundamental frequency,
how high your voice is) and the red curve under it your *loudness*: surprise often rises in pitch, sadness
goes flat and quiet. The model sees only the spectrogram; the two lines are there to help you read it.

**3. Decide.** Three networks read it side by side. Two *convolutional* networks scan it like an image for
patterns of pitch and energy; a *Transformer* reads it as a sequence and, through *attention*, lets every
moment look at every other. Their findings are combined into a probability for each of 8 emotions.{ENSEMBLE_NOTE}

**The attention maps** show, for each layer and head of the Transformer, how much each moment (row) looked at
each other moment (column). The bottom curve under the spectrogram rolls all of them up into one line: the
moments that shaped the answer most.

**Several sentences?** A recording is split at its pauses, and each utterance gets its own emotion, shown as
a timeline. Sentences longer than 3 s are judged in 3-s windows.

**"Not sure"** means the model's probability for its best guess is under 50%: it is then more likely wrong
than right, so it names the two emotions it hesitates between. Its probabilities are calibrated on speakers it
never heard, so "70% confident" means right about 70% of the time.

**Live** shows what the model hears in the last 3 s, twice a second, while you speak (a dot is a pause); when
you stop, the whole take is analysed. **Compare two takes** puts two recordings side by side: say a sentence
happy, then sad, and see which emotions moved.
"""

ABOUT = f"""
**Model:** {NETWORKS}, trained from scratch on RAVDESS, after *Parallel is All You Want* (2020). Loaded from
{model_source}, running on `{recognizer.device}`.

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
.verdict ol {font-size: 1.3rem; text-align: left; margin: 0.3rem auto; width: fit-content;}
.verdict ol small {font-weight: 400; opacity: 0.75;}
.figure {display: block; width: 100%; height: auto; max-width: 800px; margin: 0 auto;}
.figure-placeholder {text-align: center; opacity: 0.6; padding: 2rem 0;}
.hub-note {font-size: 0.9rem; opacity: 0.85;}
.live-strip {font-size: 1.4rem; line-height: 1.6; min-height: 2.4rem; overflow-wrap: anywhere;}
.compare .takes {display: flex; gap: 1rem;} .compare .takes > div {flex: 1; text-align: center;}
.compare .verdict {font-size: 1.6rem;}
.compare table {width: 100%; font-size: 0.9rem;} .compare td {padding: 2px 4px;}
.compare .bar {height: 5px; border-radius: 3px; margin-bottom: 1px;}
.compare .bar.a {background: #4c78a8;} .compare .bar.b {background: #e45756;}
"""
LIVE_PLACEHOLDER = "<div class='live-strip' data-readings='0'>Press record and speak.</div>"
SPECTROGRAM_PLACEHOLDER = "<div class='figure-placeholder'>The spectrogram, pitch and loudness appear here.</div>"
ATTENTION_PLACEHOLDER = "<div class='figure-placeholder'>The attention maps appear here.</div>"

with gr.Blocks(title="Speech emotion recognition") as demo:
    gr.Markdown(
        "# 🎙️ What emotion is in your voice?\nRecord a sentence, upload a clip, speak live, or compare two takes. "
        "The model shows what it heard, where it listened, and which of 8 emotions it recognises."
    )
    if hub_fallback:
        gr.Markdown(f"ℹ️ Using the shipped checkpoint: {hub_fallback}.", elem_classes="hub-note")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Tabs():
                with gr.Tab("Record or upload"):
                    audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Your voice")
                    button = gr.Button("Recognise emotion", variant="primary")
                # Rendered with the page, not on first opening: the streaming recorder starts loading its WAV
                # encoder when it is created, and a Record press before that is done streams nothing (Gradio 6).
                with gr.Tab("Live", elem_id="live-tab", render_children=True):
                    live_audio = gr.Audio(
                        sources=["microphone"], streaming=True, type="numpy", label="Speak: the meter follows you"
                    )
                    live_strip = gr.HTML(LIVE_PLACEHOLDER, elem_id="live-strip")
                    live_meter = gr.Label(num_top_classes=3, label="Right now", elem_id="live-meter")
                    take = gr.State(None)
                with gr.Tab("Compare two takes", elem_id="compare-tab"):
                    gr.Markdown("Say one sentence two ways (happy, then sad) and see what changed.")
                    with gr.Row():
                        take_a, take_b = (
                            gr.Audio(
                                sources=["microphone", "upload"],
                                type="filepath",
                                label=f"Take {x}",
                                elem_id=f"take-{x.lower()}",
                            )
                            for x in "AB"
                        )
                    compare_button = gr.Button("Compare", variant="primary")
                    comparison = gr.HTML(elem_id="comparison")
            verdict = gr.HTML("<div class='verdict'>🎧<span>waiting for audio</span></div>")
            probabilities = gr.Label(num_top_classes=8, label="Probability of each emotion", show_heading=False)
            examples_slot = gr.Column()
        with gr.Column(scale=3):
            spectrogram = gr.HTML(SPECTROGRAM_PLACEHOLDER, elem_id="spectrogram")
            attention = gr.HTML(ATTENTION_PLACEHOLDER, elem_id="attention")
    timeline = gr.Plot(label="Emotion timeline", format="png", show_label=False, visible=False, elem_id="timeline")
    with gr.Accordion("How it works", open=False):
        gr.Markdown(HOW_IT_WORKS)
    with gr.Accordion("About the model", open=False):
        gr.Markdown(ABOUT)
    gr.Markdown(f"<small>Model: {model_source} · device: `{recognizer.device}`</small>")

    outputs = [verdict, probabilities, spectrogram, attention, timeline]
    gr.on(
        triggers=[button.click, audio.stop_recording, audio.upload],
        fn=analyze,
        inputs=audio,
        outputs=outputs,
        api_name="analyze",
    )
    live_audio.start_recording(start_take, outputs=[take, live_strip, live_meter])
    live_audio.stream(
        follow_take,
        inputs=[live_audio, take],
        outputs=[take, live_strip, live_meter],
        stream_every=UPDATE_SECONDS,
        concurrency_limit=4,  # each reading takes ~10 ms: several live takes at once must not queue
        show_progress="hidden",
    )
    live_audio.stop_recording(finish_take, inputs=take, outputs=outputs)
    compare_button.click(compare, inputs=[take_a, take_b], outputs=comparison, api_name="compare")
    if EXAMPLES:
        with examples_slot:
            gr.Examples(
                EXAMPLES,
                inputs=audio,
                outputs=outputs,
                fn=analyze,
                run_on_click=True,
                cache_examples=False,
                label="Example voices (RAVDESS, one per emotion): click one",
                example_labels=[example_label(row[0]) for row in EXAMPLES],
                examples_per_page=16,
            )
    # API endpoints without figures, so clients get a fast answer: the probabilities, and each utterance's.
    api_label = gr.Label(visible=False)
    gr.Button(visible=False).click(predict, inputs=audio, outputs=api_label, api_name="predict")
    api_json = gr.JSON(visible=False)
    gr.Button(visible=False).click(utterances, inputs=audio, outputs=api_json, api_name="utterances")

demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)

if __name__ == "__main__":
    demo.launch(css=CSS, allowed_paths=[args.examples] if args.examples else None, max_file_size=MAX_UPLOAD)
