"""A classroom at once: N concurrent gradio_client users, each sending clips to one of the app's endpoints.

    python scripts/loadtest.py [--endpoint analyze|predict] [--clients 20] [--clips 5] [--seconds 3] [--floor]
    python scripts/loadtest.py --clients 1 --clips 20      # one user's sequential round trips

Without --url it starts `python app.py` on a free port and stops it afterwards; --floor also measures a
Gradio app with the same endpoints whose handlers do nothing, the floor that Gradio and the client on
these cores set. Prints the success count and p50/p95/max latency per request; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from benchmark import speech_like  # noqa: E402

NOOP_APP = """
import gradio as gr

with gr.Blocks() as demo:
    audio = gr.Audio(type="filepath")
    outputs = [gr.HTML(), gr.Label(), gr.HTML(), gr.HTML(), gr.Plot()]
    gr.Button().click(lambda path: ("", {"neutral": 1.0}, "", "", None), audio, outputs, api_name="analyze")
    gr.Button().click(lambda path: {"neutral": 1.0}, audio, gr.Label(), api_name="predict")
demo.queue(default_concurrency_limit=2, max_size=64).launch()
"""


def start_app(noop: bool = False) -> tuple[subprocess.Popen, str]:
    """``python app.py`` (or the no-op app) on a free port, once it says it is running."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    log = Path(tempfile.gettempdir()) / f"loadtest-{'noop' if noop else 'app'}.log"
    command = [sys.executable, "-c", NOOP_APP] if noop else [sys.executable, "app.py"]
    with open(log, "w") as out:  # the child keeps its own handle
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while "Running on" not in log.read_text():
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"app.py did not start; see {log}")
        time.sleep(0.5)
    return process, url


def run_load(url: str, endpoint: str, clients: int, clips: list[str]) -> list[float]:
    """Every client sends every clip in turn, all starting together; returns the latencies, prints failures."""
    from gradio_client import Client, handle_file

    latencies, failures, lock = [], [], threading.Lock()
    users = [Client(url, verbose=False) for _ in range(clients)]
    start_line = threading.Barrier(clients)

    def user(client: Client) -> None:
        start_line.wait()  # everyone presses the button together
        for clip in clips:
            started = time.perf_counter()
            try:
                client.predict(handle_file(clip), api_name=f"/{endpoint}")
                with lock:
                    latencies.append(time.perf_counter() - started)
            except Exception as e:  # a load test counts failures rather than stopping at one
                with lock:
                    failures.append(repr(e))

    threads = [threading.Thread(target=user, args=(c,)) for c in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = clients * len(clips)
    print(f"  succeeded: {len(latencies)}/{total} ({len(failures)} failed)")
    for failure in failures[:5]:
        print("  failure:", failure)
    return latencies


def report(name: str, latencies: list[float]) -> None:
    if latencies:
        p95 = float(np.percentile(latencies, 95))
        print(
            f"  {name}: latency p50 {statistics.median(latencies):.3f} s, p95 {p95:.3f} s, max {max(latencies):.3f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an app already running; default: start python app.py")
    parser.add_argument("--endpoint", default="analyze", choices=["analyze", "predict"])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--clips", type=int, default=5, help="requests per client, sent one after another")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    parser.add_argument("--floor", action="store_true", help="also measure a no-op Gradio app with the same endpoints")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    clips = []
    for i in range(args.clips):
        path = folder / f"clip{i}.wav"
        sf.write(path, speech_like(args.seconds, seed=i), 16000)
        clips.append(str(path))

    targets = [("app", args.url)] + ([("no-op floor", None)] if args.floor else [])
    print(f"{args.clients} clients x {args.clips} clips of {args.seconds:.0f} s on /{args.endpoint}")
    for name, url in targets:
        process = None
        if url is None:
            process, url = start_app(noop=name != "app")
        print(f"{name} at {url}:")
        try:
            report(name, run_load(url, args.endpoint, args.clients, clips))
        finally:
            if process:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
