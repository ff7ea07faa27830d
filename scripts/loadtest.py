"""A classroom at once: N concurrent gradio_client users, each sending clips to the /predict API.

    python scripts/loadtest.py [--url http://127.0.0.1:7860] [--clients 20] [--clips 5] [--seconds 3]

Without --url it starts `python app.py` on a free port and stops it afterwards. Prints the success
count and p50/p95/max latency per request; asserts nothing.
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


def start_app() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    log = Path(tempfile.gettempdir()) / "loadtest-app.log"
    with open(log, "w") as out:  # the child keeps its own handle
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while "Running on" not in log.read_text():
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"app.py did not start; see {log}")
        time.sleep(0.5)
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--clips", type=int, default=5, help="requests per client, sent one after another")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    process, url = (None, args.url) if args.url else start_app()
    folder = Path(tempfile.mkdtemp())
    clips = []
    for i in range(args.clips):
        path = folder / f"clip{i}.wav"
        sf.write(path, speech_like(args.seconds, seed=i), 16000)
        clips.append(str(path))

    latencies, failures, lock = [], [], threading.Lock()
    clients = [Client(url, verbose=False) for _ in range(args.clients)]
    start_line = threading.Barrier(args.clients)

    def user(client: Client) -> None:
        start_line.wait()  # everyone presses the button together
        for clip in clips:
            started = time.perf_counter()
            try:
                result = client.predict(handle_file(clip), api_name="/predict")
                assert len(result["confidences"]) == 8
                with lock:
                    latencies.append(time.perf_counter() - started)
            except Exception as e:  # a load test counts failures rather than stopping at one
                with lock:
                    failures.append(repr(e))

    threads = [threading.Thread(target=user, args=(c,)) for c in clients]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    if process:
        process.terminate()

    total = args.clients * args.clips
    print(f"{args.clients} clients x {args.clips} clips of {args.seconds:.0f} s against {url}")
    print(f"succeeded: {len(latencies)}/{total} ({len(failures)} failed) in {wall:.1f} s")
    if latencies:
        p95 = float(np.percentile(latencies, 95))
        print(f"latency p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s")
    for failure in failures[:5]:
        print("  failure:", failure)


if __name__ == "__main__":
    main()
