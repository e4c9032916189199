"""The engine that the Slicer module starts stops by itself when Slicer is killed.

The module starts ``plkd predict`` in a process group of its own (Cancel stops that whole tree), so a Slicer killed
with SIGKILL left the engine running: ``PythonSlicer`` is a launcher between them that reads the engine's output and
outlives Slicer, so the engine never met a closed pipe; it used the CPU for minutes and wrote its outputs later.
Here a stand-in for Slicer starts a real engine through such a launcher with the module's own ``BackgroundProcess``
and ``engineEnvironment``, and is killed while the engine is half-way through a batch; the engine must end within
seconds, each scan's outputs complete or absent, no temporary file left.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plkd.parent import EXIT_CODE, process_alive

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "Testing" / "data"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL of a POSIX process")
pytest.importorskip("vtk", reason="the Slicer module's engine runner needs VTK (slicer-core wheel)")


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not process_alive(pid):  # a zombie (dead, not yet reaped by init) counts as gone
            return True
        time.sleep(0.05)
    return False


#: A launcher like ``PythonSlicer``: starts the real Python as its child, forwards its output and outlives the
#: process that started it (its writes to a reader that is gone fail, and it goes on reading).
LAUNCHER = """
import subprocess, sys
engine = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
print(engine.pid, flush=True)
for line in engine.stdout:
    try:
        sys.stdout.write(line)
        sys.stdout.flush()
    except OSError:
        pass
sys.exit(engine.wait())
"""


def _slicer_stand_in(tmp: Path, inputs: list[Path], out: Path) -> Path:
    """A script that runs the engine as the module does (through a launcher), prints the engine's pid once it wrote
    one scan, and waits."""
    script = tmp / "slicer_stand_in.py"
    (tmp / "launcher.py").write_text(LAUNCHER, encoding="utf-8")
    argv = [sys.executable, str(tmp / "launcher.py"), sys.executable, "-m", "plkd", "predict", *map(str, inputs)]
    argv += ["--output-dir", str(out)]
    argv += ["--model", str(DATA / "tiny-bundle"), "--device", "cpu", "--progress", "jsonl"]
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            sys.path.insert(0, {str(REPO / "CMBSegmentation")!r})
            from CMBSegmentationLib.backgroundProcess import BackgroundProcess
            from CMBSegmentationLib.inferenceJob import engineEnvironment

            env = engineEnvironment()
            env["PYTHONPATH"] = os.pathsep.join([{str(REPO / "PLKDTraining")!r}, env.get("PYTHONPATH", "")])
            launcher = BackgroundProcess({argv!r}, env=env)
            lines, said = [], []
            def progress(event):
                if event.stage == "write" and event.done == 1 and not said:
                    print(lines[0], flush=True)  # the engine's pid, once it wrote a scan
                    said.append(True)
            while True:
                launcher.poll(progress, onLog=lambda stream, line: lines.append(line) if not lines else None)
                time.sleep(0.05)
            """
        ),
        encoding="utf-8",
    )
    return script


def test_the_engine_stops_without_partial_output_when_slicer_is_killed(tmp_path: Path) -> None:
    inputs = []
    for i in range(30):
        inputs.append(tmp_path / "in" / f"case{i:02d}_T2S.nii.gz")
        inputs[-1].parent.mkdir(exist_ok=True)
        shutil.copy(DATA / "tiny-case" / "tiny_T2S.nii.gz", inputs[-1])
    out = tmp_path / "out"
    stand_in = subprocess.Popen(
        [sys.executable, str(_slicer_stand_in(tmp_path, inputs, out))], stdout=subprocess.PIPE, text=True
    )
    engine = 0
    try:
        ready, _, _ = select.select([stand_in.stdout], [], [], 120)
        line = stand_in.stdout.readline() if ready else ""  # the engine's pid, once its first scan is written
        assert line.strip().isdigit(), "the engine wrote no scan"
        engine = int(line)
        os.kill(stand_in.pid, signal.SIGKILL)  # Slicer killed: no Cancel, no clean-up of its own
        stand_in.wait(timeout=10)
        assert _gone(engine, within=20), "the engine kept running after Slicer was killed"
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
        if engine and process_alive(engine):
            os.kill(engine, signal.SIGKILL)  # the launcher then ends with it
    labels = sorted(p.name[: -len("_cmb.nii.gz")] for p in out.glob("*_cmb.nii.gz"))
    candidates = sorted(p.name[: -len("_cmb.json")] for p in out.glob("*_cmb.json"))
    assert labels == candidates and 1 <= len(labels) < len(inputs), labels  # stopped early, each scan whole
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files were left"
    time.sleep(1.0)
    assert sorted(p.name[: -len("_cmb.nii.gz")] for p in out.glob("*_cmb.nii.gz")) == labels  # nothing later


def test_a_run_whose_parent_is_already_gone_stops_with_its_own_exit_code(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    env = {**os.environ, "PLKD_PARENT_PID": str(gone.pid), "PYTHONPATH": str(REPO / "PLKDTraining")}
    code = "import time\nfrom plkd.cli import exit_code_of\nraise SystemExit(exit_code_of(lambda: time.sleep(30)))"
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == EXIT_CODE and time.monotonic() - t0 < 20
    assert run.stderr.strip().splitlines()[-1] == "plkd: stopped: the process that started it is gone"
