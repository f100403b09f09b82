"""Screenshots of a leaderboard in ``mlflow ui``, taken by headless Chromium, for ``docs/``.

Usage (after ``make test``, whose gate store holds a run of every approach)::

    python scripts/screenshot_ui.py --tracking-uri sqlite:///PATH/mlflow.db --experiment lumbar-bench-ci

It builds and publishes the board (``lumbar-bench leaderboard``), starts ``mlflow ui`` on
127.0.0.1, and writes three pictures into ``docs/``: the board's runs view
(``mlflow-leaderboard-runs.png``), the leaderboard run's table (``mlflow-leaderboard-table.png``)
and the compare page of its runs (``mlflow-leaderboard-compare.png``). Needs Debian's
``chromium`` (``apt-get install chromium``); nothing in the tests depends on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from lumbar_bench.board import leaderboard as lb
from lumbar_bench.board import publish
from lumbar_bench.board.rows import TABLE
from lumbar_bench.tracking.client import experiment_id
from lumbar_bench.tracking.names import DEFAULT_EXPERIMENT

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHROMIUM = (
    "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync --hide-scrollbars"
).split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_ui(uri: str) -> Iterator[str]:
    """``mlflow ui`` on a free local port for the block; yields its base address."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("mlflow ui did not start within 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def screenshot(url: str, out: Path, size: str = "2000,900") -> Path:
    """Render ``url`` in headless Chromium (JavaScript given 20 s) and save a PNG at ``out``."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                *CHROMIUM,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                "--virtual-time-budget=20000",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return out


def main() -> None:
    """Publish the board of ``--experiment`` and take the three screenshots."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--subset", default="ci")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    board = lb.build(lb.BoardRequest(args.tracking_uri, args.experiment, subset=args.subset))
    with tempfile.TemporaryDirectory() as tmp:
        board_run = publish.publish(board, args.tracking_uri, publish.write(board, Path(tmp)))
    view = publish.share_view(board, args.tracking_uri)
    exp = experiment_id(args.tracking_uri, args.experiment)
    args.out.mkdir(parents=True, exist_ok=True)
    with mlflow_ui(args.tracking_uri) as base:
        screenshot(base + view, args.out / "mlflow-leaderboard-runs.png")
        table = f"{base}/#/experiments/{exp}/runs/{board_run}/artifacts/{quote(TABLE)}"
        screenshot(table, args.out / "mlflow-leaderboard-table.png")
        runs = quote(json.dumps(board.run_ids))
        compare = f"{base}/#/compare-runs?runs={runs}&experiments={quote(json.dumps([exp]))}"
        screenshot(compare, args.out / "mlflow-leaderboard-compare.png", size="2000,1000")
    print(f"board {board.board_id}: screenshots in {args.out}")


if __name__ == "__main__":
    main()
