"""What a learner sees in a real browser: headless Chromium opens TensorBoard's IMAGES tab for a
``configs/line.yaml`` run and finds the fit snapshot's step slider.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON
messages ending in a NUL byte on file descriptors 3 and 4), so no websocket or browser-automation
package is needed. The IMAGES dashboard is built of Polymer elements whose content lives in shadow
roots, which ``--dump-dom`` does not serialize: the page is read by evaluating JavaScript in it.
"""

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import CONFIGS, tensorboard_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BASH = shutil.which("bash")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(BASH is None, reason="bash is needed to hand Chromium its DevTools pipe"),
]

# Every tf-image-loader (one image card) anywhere in the page, through the shadow roots, with the
# number of positions of its step slider (absent when the card has a single step).
CARDS_SCRIPT = """
(() => {
  const loaders = [];
  const walk = (root) => {
    for (const element of root.querySelectorAll("*")) {
      if (element.localName === "tf-image-loader") loaders.push(element);
      if (element.shadowRoot) walk(element.shadowRoot);
    }
  };
  walk(document);
  return loaders.map((loader) => {
    const slider = loader.shadowRoot && loader.shadowRoot.querySelector("paper-slider#steps");
    const image = loader.shadowRoot && loader.shadowRoot.querySelector("img");
    return {
      run: loader.run,
      tag: loader.tag,
      slider_positions: slider ? Number(slider.max) + 1 : null,
      first_step: loader._steps && loader._steps.length ? loader._steps[0].step : null,
      image_loaded: Boolean(image && image.complete && image.naturalWidth > 0),
    };
  });
})()
"""


class DevToolsPipe:
    """A headless Chromium and the DevTools protocol over its pipe; one page is attached."""

    def __init__(self, profile: Path) -> None:
        to_browser, self.writer = os.pipe()
        self.reader, from_browser = os.pipe()
        # The browser's ends are moved above 9, so that mapping them onto 3 and 4 cannot clobber one.
        browser_ends = [fcntl.fcntl(end, fcntl.F_DUPFD, 10) for end in (to_browser, from_browser)]
        for end in (to_browser, from_browser):
            os.close(end)
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # The browser reads commands on its fd 3 and writes answers on fd 4: bash maps them (dash
        # takes single-digit descriptors only) and closes the originals.
        command, answers = browser_ends
        self.process = subprocess.Popen(
            [BASH, "-c", f'exec "$0" "$@" 3<&{command} 4>&{answers} {command}<&- {answers}>&-', CHROMIUM, *flags],
            pass_fds=browser_ends,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for end in browser_ends:
            os.close(end)
        self.buffer, self.next_id, self.session = b"", 0, None

    def call(self, method: str, timeout: float = 30, **params) -> dict:
        """Send one command (to the attached page once there is one) and return its result."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.writer, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self.next_id:  # events and other answers are skipped
                    assert "error" not in answer, answer["error"]
                    return answer["result"]
            left = deadline - time.monotonic()
            assert left > 0, f"Chromium did not answer {method} within {timeout} s"
            if select.select([self.reader], [], [], left)[0]:
                chunk = os.read(self.reader, 1 << 16)
                assert chunk, "Chromium closed the DevTools pipe"
                self.buffer += chunk

    def open(self, url: str) -> None:
        """Open a page, attach to it, and navigate to ``url`` (answered once the page commits, so
        that it has a JavaScript context to evaluate in)."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        navigation = self.call("Page.navigate", url=url)
        assert "errorText" not in navigation, navigation

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"]["value"]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (AssertionError, OSError):
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=30)
            os.close(self.writer)
            os.close(self.reader)


@pytest.fixture
def line_run(train_run):
    """A short line.yaml run: its run directory."""
    summary = train_run(
        "--config", str(CONFIGS / "line.yaml"), "--trainer.max_epochs=40", "--trainer.check_val_every_n_epoch=10"
    )
    return Path(summary["run_dir"])


def test_images_page_shows_the_fit_slider_in_a_real_browser(line_run, tmp_path):
    accumulator = EventAccumulator(str(line_run), size_guidance={"images": 0})
    accumulator.Reload()
    snapshots = len(accumulator.Images("fit"))
    # TensorBoard keeps 10 images per tag unless told otherwise: the README's command keeps them all.
    with tensorboard_server(line_run.parents[1], "--samples_per_plugin", "images=100") as url:
        browser = DevToolsPipe(tmp_path / "chromium-profile")
        try:
            browser.open(f"{url}/#images")
            deadline = time.monotonic() + 90
            while True:  # until the dashboard has fetched the run and drawn its cards (bounded)
                cards = {card["tag"]: card for card in browser.evaluate(CARDS_SCRIPT)}
                fit, landscape = cards.get("fit", {}), cards.get("landscape", {})
                # Each card loads its image on its own: wait for both, not for the fit's alone.
                if fit.get("slider_positions") and fit["image_loaded"] and landscape.get("image_loaded"):
                    break
                assert time.monotonic() < deadline, f"no fit slider and landscape image in 90 s: {cards}"
                time.sleep(0.5)
        finally:
            browser.close()
    assert cards["fit"]["run"] == f"{line_run.parent.name}/{line_run.name}"
    # One slider position per snapshot, from step 0: the line rotating into place, step by step.
    assert cards["fit"]["slider_positions"] == snapshots >= 10
    assert cards["fit"]["first_step"] == 0
    assert cards["landscape"]["image_loaded"]
