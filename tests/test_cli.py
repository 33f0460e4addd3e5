"""The `vsrft` command's surface: --help groups, --version, -v/-q placement, the per-shot lines
and the progress bar on a real terminal (a pseudo-terminal), all through the real CLI."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading

from helpers import cli_env, vsrft

SHOT_LINE = re.compile(r"^vsrft: shot at \d+:\d\d\.\d: (adapted|kept the base network: [a-z ,-]+)$")


def test_help_groups_its_options_and_version() -> None:
    run = vsrft("enhance", "--help")
    assert run.returncode == 0
    groups = [line[:-1] for line in run.stdout.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert groups == ["options", "input/output and encoding", "model and footage", "adaptation", "advanced"]
    adaptation = run.stdout.split("\nadaptation:")[1].split("\nadvanced:")[0]
    assert "--adapt-seconds S" in adaptation and "--save-adapted DIR" in adaptation and "--codec" not in adaptation
    version = vsrft("--version")
    assert version.returncode == 0 and re.fullmatch(r"vsrft \d+\.\d+\.\d+\n", version.stdout)


def test_quiet_and_verbose_work_after_the_subcommand_and_shots_are_told_in_words(tiny_model, clip, tmp_path) -> None:
    src = clip("cut")                                         # two shots: at 0:00.0 and 0:00.5
    args = ("--model", tiny_model, "--adapt-steps", "2", "--adapt-sync", "--codec", "ffv1")
    loud = vsrft("enhance", src, tmp_path / "a.mkv", *args)
    assert loud.returncode == 0, loud.stderr
    shots = [line for line in loud.stderr_lines if line.startswith("vsrft: shot at")]
    assert [line.split(":", 1)[1][:15] for line in shots] == [" shot at 0:00.0", " shot at 0:00.5"]
    assert all(SHOT_LINE.match(line) for line in shots), shots
    quiet = vsrft("enhance", src, tmp_path / "b.mkv", *args, "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    verbose = vsrft("models", "-v")
    assert verbose.returncode == 0 and "vsrft-mse" in verbose.stdout


def _run_on_a_terminal(*args: object, timeout: float = 300) -> str:
    """stderr of the real CLI when it is a terminal (a pseudo-terminal), as written."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vsrft", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env=cli_env())
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:           # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.wait(timeout=timeout) == 0
    reader.join(timeout=10)
    os.close(master)
    return b"".join(chunks).decode()


def test_progress_bar_shows_adaptation_and_log_lines_do_not_land_on_it(tiny_model, clip, tmp_path) -> None:
    err = _run_on_a_terminal("enhance", clip("cut"), tmp_path / "o.mkv", "--model", tiny_model,
                             "--adapt-steps", "3", "--adapt-sync", "--codec", "ffv1")
    draws = [d for line in err.replace("\r\n", "\n").split("\n") for d in line.split("\r\x1b[K") if d]
    assert any(d.startswith("adapting shot at 0:00.0 step 3/3 [") for d in draws), draws
    assert any(d.startswith("adapting shot at 0:00.5 step ") for d in draws), draws
    assert any(d.startswith("upscaling [") and "24/24 frames" in d for d in draws), draws
    logged = [d for d in draws if "vsrft: " in d]
    assert len([d for d in logged if "shot at" in d]) == 2
    assert all(d.startswith("vsrft: ") for d in logged), logged          # each record on a line of its own
