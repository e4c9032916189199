"""Qt-free helpers of the Slicer module: progress lines, command lines, run states, child processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CMBSegmentation"))

pytest.importorskip("vtk", reason="the Slicer module helpers need VTK (slicer-core wheel)")

from CMBSegmentationLib import (  # noqa: E402
    batchInputs,
    commandBuilder,
    dependencies,
    modelBundle,
    moduleReload,
    reviewShortcuts,
    workFolders,
)
from CMBSegmentationLib.backgroundProcess import BackgroundProcess  # noqa: E402
from CMBSegmentationLib.inferenceJob import EngineCancelledError, EngineError, runBlocking  # noqa: E402
from CMBSegmentationLib.progressParsing import (  # noqa: E402
    LineSplitter,
    ProgressEvent,
    errorMessageFromStderr,
    parseProgressLine,
)
from CMBSegmentationLib.runLog import OverallProgress, RunLog, formatElapsed  # noqa: E402
from CMBSegmentationLib.runState import RunState, RunStateMachine, TransitionError  # noqa: E402

# --- progress lines ------------------------------------------------------------------------------------------


def test_progress_line_with_counts_gives_stage_and_fraction():
    event = parseProgressLine('{"stage": "screen", "done": 1, "total": 4}\n')
    assert event == ProgressEvent(stage="screen", done=1, total=4)
    assert event.fraction == pytest.approx(0.25)


def test_progress_message_line_has_no_fraction():
    event = parseProgressLine('{"stage": "segment", "message": "wrote sub_cmb.nii.gz"}')
    assert event.message == "wrote sub_cmb.nii.gz" and event.fraction is None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Loading model...",
        "{",
        '{"stage": "screen", "done": 1',
        "[1, 2, 3]",
        '{"foo": 1}',
        '{"stage": "screen", "done": "one", "total": 3}',
        '{"stage": "screen", "done": true, "total": 3}',
        '{"stage": 5, "done": 1, "total": 3}',
    ],
)
def test_junk_lines_are_not_progress(line):
    assert parseProgressLine(line) is None


def test_partial_lines_are_joined_before_parsing():
    splitter = LineSplitter()
    assert splitter.feed('{"stage": "scr') == []
    lines = splitter.feed('een", "done": 1, "total": 3}\r\n{"stage": "segment", "do')
    assert [parseProgressLine(x).stage for x in lines] == ["screen"]
    assert splitter.feed('ne": 2, "total": 5}') == []
    (last,) = splitter.flush()
    assert parseProgressLine(last) == ProgressEvent("segment", 2, 5)
    assert splitter.flush() == []


def test_engine_error_line_is_extracted_from_stderr():
    stderr = "WARNING: slow\nplkd: error: input.nii.gz is not a 3D volume\n"
    assert errorMessageFromStderr(stderr) == "input.nii.gz is not a 3D volume"
    assert errorMessageFromStderr("Traceback ...\nValueError: x\n") is None


# --- command lines ------------------------------------------------------------------------------------------


def test_predict_command_has_every_option_in_contract_form(tmp_path):
    argv = commandBuilder.buildPredictCommand(
        "/opt/PythonSlicer",
        tmp_path / "in.nii.gz",
        tmp_path / "out",
        modelPath="/models/b1",
        device="CPU",
        maskPath=tmp_path / "mask.nii.gz",
        threshold=0.35,
    )
    assert argv[:5] == ["/opt/PythonSlicer", "-m", "plkd", "predict", str(tmp_path / "in.nii.gz")]
    assert argv[argv.index("--output-dir") + 1] == str(tmp_path / "out")
    assert argv[argv.index("--model") + 1] == "/models/b1"
    assert argv[argv.index("--device") + 1] == "cpu"
    assert argv[argv.index("--mask") + 1] == str(tmp_path / "mask.nii.gz")
    assert argv[argv.index("--progress") + 1] == "jsonl"
    assert float(argv[argv.index("--threshold") + 1]) == 0.35


def test_default_model_mask_and_threshold_are_left_to_the_engine():
    argv = commandBuilder.buildPredictCommand("py", "in.nii.gz", "out", modelPath="  ", device="Auto")
    assert "--model" not in argv and "--mask" not in argv and "--threshold" not in argv
    # The Threshold slider at its left end ("model's", the default) keeps each segmenter's tuned threshold: a fixed
    # 0.5 replaced the shipped model's 0.1-0.4, so Apply kept fewer microbleeds than plkd predict without a word.
    argv = commandBuilder.buildPredictCommand("py", "in.nii.gz", "out", threshold=commandBuilder.MODEL_THRESHOLD)
    assert "--threshold" not in argv
    assert argv[argv.index("--device") + 1] == "auto"


@pytest.mark.parametrize(
    ("choice", "platform", "expected"),
    [("Auto", "linux", "auto"), ("CPU", "darwin", "cpu"), ("GPU", "linux", "cuda"), ("GPU", "win32", "cuda"),
     ("GPU", "darwin", "mps")],
)  # fmt: skip
def test_device_choice_maps_to_engine_device(choice, platform, expected):
    assert commandBuilder.engineDevice(choice, platform) == expected
    argv = commandBuilder.buildPredictCommand("py", "a.nii", "o", device=choice, platform=platform)
    assert argv[argv.index("--device") + 1] == expected


def test_bad_device_and_threshold_are_refused():
    with pytest.raises(ValueError, match="unknown device"):
        commandBuilder.engineDevice("TPU")
    with pytest.raises(ValueError, match="threshold"):
        commandBuilder.buildPredictCommand("py", "a.nii", "o", threshold=1.5)


def test_single_point_command_adds_at_ras_without_mask_or_threshold():
    argv = commandBuilder.buildSinglePointCommand("py", "a.nii.gz", "o", (-20.5, -3.0, 40.125), device="GPU",
                                                  platform="linux")  # fmt: skip
    # The "=" form: "--at-ras -20.5,..." would make argparse read the negative X as an option.
    (point,) = [a for a in argv if a.startswith("--at-ras")]
    assert point == "--at-ras=-20.5,-3.0,40.125"
    assert argv[argv.index("--device") + 1] == "cuda"
    assert argv[3] == "predict" and "--mask" not in argv
    x, y, z = (float(v) for v in point.split("=", 1)[1].split(","))
    assert (x, y, z) == (-20.5, -3.0, 40.125)
    with pytest.raises(ValueError):
        commandBuilder.buildSinglePointCommand("py", "a.nii.gz", "o", (1.0, float("nan"), 2.0))


def test_output_names_follow_the_contract(tmp_path):
    outputs = commandBuilder.predictOutputs("/data/sub-01_T2S.nii.gz", tmp_path)
    assert outputs.labelMap == tmp_path / "sub-01_T2S_cmb.nii.gz"
    assert outputs.candidates == tmp_path / "sub-01_T2S_cmb.json"
    assert commandBuilder.predictOutputs("a.nii", tmp_path).labelMap.name == "a_cmb.nii.gz"


# --- run states ---------------------------------------------------------------------------------------------


def test_run_goes_through_its_states_and_reports_them():
    machine, seen = RunStateMachine(), []
    machine.addListener(lambda old, new: seen.append((old, new)))
    for state in (RunState.STARTING, RunState.RUNNING, RunState.IMPORTING, RunState.DONE, RunState.STARTING):
        machine.transition(state)
    assert machine.busy
    assert seen[0] == (RunState.IDLE, RunState.STARTING) and seen[-1] == (RunState.DONE, RunState.STARTING)


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ([], RunState.RUNNING),  # Idle cannot run without starting
        ([RunState.STARTING, RunState.RUNNING, RunState.CANCELLING], RunState.IMPORTING),  # no import after cancel
        ([RunState.STARTING, RunState.RUNNING], RunState.DONE),  # results must be imported first
        ([RunState.STARTING], RunState.STARTING),  # double click on Apply
    ],
)
def test_impossible_transitions_are_refused(path, refused):
    machine = RunStateMachine()
    for state in path:
        machine.transition(state)
    with pytest.raises(TransitionError):
        machine.transition(refused)
    assert machine.state == (path[-1] if path else RunState.IDLE)


def test_cancel_and_failure_return_to_a_state_that_can_start_again():
    machine = RunStateMachine()
    for state in (RunState.STARTING, RunState.RUNNING, RunState.CANCELLING, RunState.IDLE):
        machine.transition(state)
    assert not machine.busy and machine.canTransition(RunState.STARTING)
    for state in (RunState.STARTING, RunState.FAILED):
        machine.transition(state)
    assert not machine.busy and machine.canTransition(RunState.STARTING)


# --- child processes ----------------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


def test_background_process_delivers_progress_and_ignores_junk(tmp_path):
    argv = _script(
        tmp_path,
        """
        import json, sys
        print("loading torch ...")
        for i in range(3):
            print(json.dumps({"stage": "segment", "done": i + 1, "total": 3}), flush=True)
        print("warning", file=sys.stderr)
        """,
    )
    events = []
    process = BackgroundProcess(argv)
    assert process.wait(events.append) == 0
    assert [(e.stage, e.done, e.total) for e in events] == [("segment", 1, 3), ("segment", 2, 3), ("segment", 3, 3)]
    assert "warning" in process.stderr


def test_failed_engine_raises_its_own_message(tmp_path):
    argv = _script(tmp_path, 'import sys\nprint("plkd: error: no such bundle: x", file=sys.stderr)\nsys.exit(2)\n')
    with pytest.raises(EngineError, match="^no such bundle: x$"):
        runBlocking(argv)
    crash = _script(tmp_path, "raise RuntimeError('boom')\n")
    with pytest.raises(EngineError, match="(?s)exit code 1.*boom"):
        runBlocking(crash)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_an_engine_killed_by_the_system_says_so(tmp_path):
    # Killed by the out-of-memory killer the engine said "stopped with exit code -9", which reads like its own error.
    killed = _script(tmp_path, "import os, signal, sys\nprint('loading', file=sys.stderr, flush=True)\n"
                               "os.kill(os.getpid(), signal.SIGKILL)\n")  # fmt: skip
    with pytest.raises(EngineError, match="(?s)^the engine was killed by SIGKILL .*out of memory.*loading"):
        runBlocking(killed)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    # The child starts a grandchild (like the PythonSlicer launcher starting Python) and both wait forever.
    argv = _engineWithAGrandchild(tmp_path)
    events = []
    process = BackgroundProcess(argv)
    deadline = time.monotonic() + 20
    while not events and time.monotonic() < deadline:
        process.poll(events.append)
        time.sleep(0.05)
    grandchild = int(events[0].message)
    process.cancel(timeout=2)
    assert process.wait() != 0 and process.cancelled
    assert _gone(grandchild, within=5), "the grandchild survived Cancel"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
@pytest.mark.parametrize("where", ["progress", "idle"])
def test_a_blocking_run_interrupted_while_waiting_leaves_no_engine_running(tmp_path, where):
    # Ctrl+C in a batch run (or an error in a callback) ended the wait, but the engine runs in a session of its
    # own that the terminal's Ctrl+C never reaches: it went on computing, writing into a folder being removed.
    argv = _engineWithAGrandchild(tmp_path)
    events = []

    def progress(event):
        events.append(event)
        if where == "progress":
            raise KeyboardInterrupt

    def idle():
        if where == "idle" and events:
            raise RuntimeError("the progress dialog went away")

    process = BackgroundProcess(argv)
    with pytest.raises((KeyboardInterrupt, RuntimeError)):
        process.wait(progress, idle=idle)
    assert process.cancelled
    assert _gone(process.pid, within=5), "the engine survived the interruption"
    assert _gone(int(events[0].message), within=5), "the engine's child survived the interruption"


def _engineWithAGrandchild(tmp_path: Path) -> list[str]:
    """An engine that starts a grandchild (as the PythonSlicer launcher starts Python), reports its pid, and waits."""
    return _script(
        tmp_path,
        """
        import json, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(json.dumps({"stage": "start", "message": str(grandchild.pid)}), flush=True)
        time.sleep(60)
        """,
    )


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A killed grandchild is re-parented and reaped by init; a zombie still answers kill(pid, 0).
        if _isZombie(pid):
            return True
        time.sleep(0.05)
    return False


def _isZombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return False


def test_plkd_source_is_found_in_checkout_and_in_installed_layout(tmp_path):
    assert dependencies.findPLKDSource(REPO / "CMBSegmentation") == REPO / "PLKDTraining"
    installed = tmp_path / "qt-scripted-modules" / "Resources" / "PLKDTraining"
    (installed / "plkd").mkdir(parents=True)
    (installed / "pyproject.toml").write_text("[project]\nname='plkd'\n")
    (installed / "plkd" / "__init__.py").write_text("")
    assert dependencies.findPLKDSource(tmp_path / "qt-scripted-modules") == installed
    assert dependencies.findPLKDSource(tmp_path / "nowhere") is None
    assert dependencies.requirementsPath(REPO / "CMBSegmentation").is_file()


def _fakeModule(root: Path, version: str) -> Path:
    source = root / "qt-scripted-modules" / "Resources" / "PLKDTraining"
    (source / "plkd" / "__pycache__").mkdir(parents=True)
    (source / "plkd.egg-info").mkdir()
    (source / "plkd" / "__init__.py").write_text("")
    (source / "plkd" / "__pycache__" / "x.pyc").write_bytes(b"")
    (source / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\n\n[project]\nname = "plkd"\nversion = "{version}"\n\n'
        '[tool.x]\nversion = "0.0.0"\n'
    )
    return root / "qt-scripted-modules"


def test_source_version_is_the_project_version(tmp_path):
    import importlib.metadata

    assert dependencies.sourceVersion(REPO / "PLKDTraining") == importlib.metadata.version("plkd")
    moduleDir = _fakeModule(tmp_path, "2.3.4")
    assert dependencies.sourceVersion(moduleDir / "Resources" / "PLKDTraining") == "2.3.4"
    assert dependencies.sourceVersion(tmp_path / "nowhere") is None


def test_installed_engine_of_another_version_counts_as_missing(tmp_path):
    # This checkout's plkd is installed (editable, same version): nothing to install.
    assert "plkd" not in dependencies.missingPackages(REPO / "CMBSegmentation")
    # An updated extension ships another version: plkd must be reinstalled at the next Apply.
    assert "plkd" in dependencies.missingPackages(_fakeModule(tmp_path, "99.0.0"))


def test_engine_source_is_copied_for_pip_without_build_leftovers(tmp_path):
    source = _fakeModule(tmp_path / "ext", "1.0") / "Resources" / "PLKDTraining"
    copy = dependencies.copySourceForBuild(source, tmp_path / "build")
    assert (copy / "pyproject.toml").is_file() and (copy / "plkd" / "__init__.py").is_file()
    assert not (copy / "plkd.egg-info").exists() and not (copy / "plkd" / "__pycache__").exists()


# --- every engine line reaches the user; cancel never blocks ---------------------------------------------------


def test_every_output_line_reaches_the_log_in_order_with_warnings(tmp_path):
    argv = _script(
        tmp_path,
        """
        import json, sys, time
        print("loading torch ...", flush=True)
        time.sleep(0.2)
        print("WARNING: CUDA out of memory; running on the CPU", file=sys.stderr, flush=True)
        time.sleep(0.2)
        print(json.dumps({"stage": "segment", "done": 1, "total": 1}), flush=True)
        """,
    )
    lines, events = [], []
    assert BackgroundProcess(argv).wait(events.append, onLog=lambda stream, line: lines.append((stream, line))) == 0
    assert lines == [
        ("stdout", "loading torch ..."),
        ("stderr", "WARNING: CUDA out of memory; running on the CPU"),
        ("stdout", '{"stage": "segment", "done": 1, "total": 1}'),
    ]
    assert [e.stage for e in events] == ["segment"]
    log = RunLog()
    for _, line in lines:
        log.add(line)
    assert log.warnings == ["WARNING: CUDA out of memory; running on the CPU"]
    assert all(shown.startswith("[0:0") for shown in log.lines)
    # The same warning in the JSON notes is not shown twice; a new note is.
    shown = log.addNotes(["CUDA out of memory; running on the CPU", "candidate count capped at 500"])
    assert len(shown) == 1 and "capped" in shown[0] and len(log.warnings) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cancel_returns_at_once_even_when_the_engine_ignores_sigterm(tmp_path):
    argv = _script(
        tmp_path,
        """
        import json, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(json.dumps({"stage": "start", "message": str(grandchild.pid)}), flush=True)
        time.sleep(60)
        """,
    )
    events = []
    process = BackgroundProcess(argv)
    deadline = time.monotonic() + 20
    while not events and time.monotonic() < deadline:
        process.poll(events.append)
        time.sleep(0.05)
    started = time.monotonic()
    process.cancel(timeout=1.0)
    assert time.monotonic() - started < 0.5, "cancel blocked the caller"
    assert process.wait() != 0
    assert _gone(int(events[0].message), within=5)


def test_blocking_run_keeps_the_caller_alive_and_can_be_cancelled(tmp_path):
    argv = _script(
        tmp_path,
        """
        import json, time
        for i in range(600):
            print(json.dumps({"stage": "screen", "done": i, "total": 600}), flush=True)
            time.sleep(0.1)
        """,
    )
    idles, events = [], []
    started = time.monotonic()
    with pytest.raises(EngineCancelledError):
        runBlocking(argv, events.append, idle=lambda: idles.append(1), shouldCancel=lambda: len(events) >= 3)
    assert time.monotonic() - started < 20 and len(idles) >= 2


def test_overall_progress_never_restarts_and_elapsed_time_reads_well():
    progress = OverallProgress()
    fractions = [
        progress.update(ProgressEvent(stage, done, total))
        for stage, done, total in (("load", 1, 1), ("preprocess", 0, 1), ("preprocess", 1, 1), ("screen", 0, 10),
                                   ("screen", 10, 10), ("segment", 0, 40), ("segment", 20, 40), ("segment", 40, 40),
                                   ("write", 1, 1))
    ]  # fmt: skip
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert fractions[6] == pytest.approx(0.75)  # half of "segment" after load, preprocess and screen
    assert progress.update(ProgressEvent("unknown-stage", 0, 5)) == pytest.approx(1.0)
    assert (formatElapsed(5.2), formatElapsed(75.4), formatElapsed(3725)) == ("0:05", "1:15", "1:02:05")


def test_installing_is_busy_and_refuses_a_second_install_or_a_run():
    machine = RunStateMachine()
    machine.transition(RunState.INSTALLING)
    assert machine.busy
    for refused in (RunState.INSTALLING, RunState.STARTING):
        with pytest.raises(TransitionError):
            machine.transition(refused)
    machine.transition(RunState.IDLE)
    machine.transition(RunState.STARTING)
    with pytest.raises(TransitionError):
        machine.transition(RunState.INSTALLING)  # no install during a run


# --- model bundle modality -------------------------------------------------------------------------------------


def _bundle(folder: Path, modality: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"name": folder.name, "modality": modality}))
    return folder


def test_modality_is_read_from_folder_zip_and_default_bundles(tmp_path):
    import zipfile

    swi = _bundle(tmp_path / "swi-model", "SWI")
    assert modelBundle.bundleModality(swi) == "SWI"
    archive = tmp_path / "swi-model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(swi / "manifest.json", "swi-model/manifest.json")  # bundles zip their folder
    assert modelBundle.bundleModality(archive) == "SWI"
    assert modelBundle.bundleModality(tmp_path / "nothing") is None
    # The engine's default bundle, found without importing plkd.
    default = modelBundle.defaultBundle("T2S")
    assert default is not None and modelBundle.bundleModality(default) == "T2S"
    # Without a model the engine chooses its installed bundle for the modality; none for SWI here is said.
    if modelBundle.defaultBundle("SWI") is None:
        path, warning = modelBundle.chooseModel("", "SWI")
        assert path == "" and "no SWI model is installed: the T2S model will be used" in warning
    assert modelBundle.chooseModel("", "T2*") == ("", None)
    assert modelBundle.chooseModel("", "Auto") == ("", None)  # the engine decides and reports
    for model in (swi, archive):
        assert "trained on SWI" in modelBundle.chooseModel(str(model), "T2*")[1]
        assert modelBundle.chooseModel(str(model), "SWI") == (str(model), None)
        assert modelBundle.chooseModel(str(model), "Auto") == (str(model), None)
    # A manifest that writes the contrast as people do is read as the engine reads it: no false mismatch.
    t2star = _bundle(tmp_path / "t2star-model", "t2*")
    assert modelBundle.bundleModality(t2star) == "T2S" and modelBundle.chooseModel(str(t2star), "T2*")[1] is None


def test_the_engine_chooses_the_shipped_bundle_of_the_chosen_modality(tmp_path):
    bundled = tmp_path / "bundled"
    _bundle(bundled / "cmb-t2s", "T2S")
    assert "no SWI model is installed" in modelBundle.chooseModel("", "SWI", bundled)[1]
    _bundle(bundled / "cmb-swi", "SWI")
    assert modelBundle.chooseModel("", "SWI", bundled) == ("", None)
    assert modelBundle.chooseModel("", "T2*", bundled) == ("", None)
    argv = commandBuilder.buildPredictCommand("py", "a.nii.gz", "o", modality="SWI")
    assert argv[argv.index("--modality") + 1] == "SWI" and "--model" not in argv
    for choice, engine in (("Auto", "auto"), ("T2*", "T2S")):
        argv = commandBuilder.buildSinglePointCommand("py", "a.nii.gz", "o", (1.0, 2.0, 3.0), modality=choice)
        assert argv[argv.index("--modality") + 1] == engine
    assert "--modality" not in commandBuilder.buildPredictCommand("py", "a.nii.gz", "o")
    with pytest.raises(ValueError, match="unknown modality"):
        commandBuilder.buildPredictCommand("py", "a.nii.gz", "o", modality="FLAIR")
    # The choices of the module's combo box are the ones the command builder knows, in that order.
    ui = (REPO / "CMBSegmentation" / "Resources" / "UI" / "CMBSegmentation.ui").read_text(encoding="utf-8")
    box = ui[ui.index('name="modalityComboBox"') : ui.index("</widget>", ui.index('name="modalityComboBox"'))]
    items = [part.split("</string>")[0] for part in box.split('<string notr="true">')[1:]]
    assert items == list(commandBuilder.MODALITY_CHOICES)


# --- working folders, reload, dependencies, shortcuts ----------------------------------------------------------


def test_work_folders_of_ended_processes_are_removed_and_live_ones_kept(tmp_path):
    import subprocess

    mine = workFolders.createWorkFolder(tmp_path)
    (mine / "input.nii.gz").write_bytes(b"patient")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = workFolders.createWorkFolder(tmp_path)
    (stale / workFolders.OWNER_FILE).write_text(str(ended.pid))
    (stale / "input.nii.gz").write_bytes(b"patient")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = workFolders.createWorkFolder(tmp_path)
        (live / workFolders.OWNER_FILE).write_text(str(alive.pid))
        unrelated = tmp_path / "other-folder"
        unrelated.mkdir()
        assert workFolders.removeStaleWorkFolders(tmp_path) == [stale]
        assert mine.is_dir() and live.is_dir() and unrelated.is_dir() and not stale.exists()
    finally:
        alive.kill()
        alive.wait()
    old = tmp_path / f"{workFolders.PREFIX}old"
    old.mkdir()  # made by an older version: no owner file
    assert workFolders.removeStaleWorkFolders(tmp_path) == [live]  # its process has ended now
    assert old.is_dir()  # an owner-less folder may belong to a run of an older version: kept for a day
    assert workFolders.removeStaleWorkFolders(tmp_path, now=time.time() + 2 * workFolders.ORPHAN_AGE_S) == [old]
    assert mine.is_dir()


def test_reload_forgets_every_lib_module_so_the_next_import_reads_the_files_again():
    from CMBSegmentationLib import runLog

    saved = {name: module for name, module in sys.modules.items() if name.startswith("CMBSegmentationLib")}
    try:
        forgotten = moduleReload.forgetPackage("CMBSegmentationLib")
        assert set(forgotten) == set(saved) and "CMBSegmentationLib.runLog" in forgotten
        assert not [name for name in sys.modules if name.startswith("CMBSegmentationLib")]
        from CMBSegmentationLib import runLog as runLogAgain

        assert runLogAgain is not runLog
    finally:  # the rest of this session keeps the copy its other tests imported
        moduleReload.forgetPackage("CMBSegmentationLib")
        sys.modules.update(saved)


def test_torch_is_installed_alone_through_light_the_torch():
    args = dependencies.torchInstallArguments()
    assert args == ["install", "torch" + dependencies.TORCH_REQUIREMENT]
    assert not any("torchvision" in a for a in args)


def test_review_shortcuts_avoid_every_key_slicer_binds_and_are_documented():
    keys = list(reviewShortcuts.REVIEW_SHORTCUTS.values())
    assert len(set(keys)) == len(keys)
    assert not set(keys) & reviewShortcuts.SLICER_BOUND_KEYS
    assert {"Ctrl+Left", "Ctrl+Right"} <= reviewShortcuts.SLICER_BOUND_KEYS
    ui = (REPO / "CMBSegmentation" / "Resources" / "UI" / "CMBSegmentation.ui").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for key in keys:
        assert f"({key})" in ui, f"no tooltip names {key}"
        assert key in readme, f"README does not name {key}"
    assert "Ctrl+Left" not in ui and "Ctrl+Right" not in ui


def test_self_test_sample_ships_where_the_module_looks_for_it():
    cmake = (REPO / "CMBSegmentation" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources/TestData" in cmake
    module = (REPO / "CMBSegmentation" / "CMBSegmentation.py").read_text(encoding="utf-8")
    assert '"Resources" / "TestData"' in module and '"Testing" / "data"' in module
    for name in ("tiny-case/tiny_T2S.nii.gz", "tiny-case/truth.json", "tiny-bundle/manifest.json"):
        assert (REPO / "Testing" / "data" / name).is_file()
    # A skipped self-test must not raise SkipTest: "Reload and Test" shows any exception as a failure.
    assert "skipTest(" not in module


def test_the_batch_script_passes_every_modality_choice_to_the_module():
    import importlib.util

    script = REPO / "CMBSegmentation" / "Resources" / "Scripts" / "batchProcess.py"
    spec = importlib.util.spec_from_file_location("batchProcess", script)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)  # imports nothing of Slicer at the top
    assert batch.parseArguments(["--input-dir", "i", "--output-dir", "o"]).modality == "auto"
    for choice in ("auto", "T2*", "T2S", "SWI"):
        args = batch.parseArguments(["--input-dir", "i", "--output-dir", "o", "--modality", choice])
        assert batch.moduleModality(args.modality) in commandBuilder.MODALITY_CHOICES
    with pytest.raises(SystemExit):
        batch.parseArguments(["--input-dir", "i", "--output-dir", "o", "--modality", "FLAIR"])


def test_the_batch_script_refuses_inputs_whose_outputs_collide_and_finds_masks_in_any_format(tmp_path, capsys):
    # a.nii beside a.nii.gz (or "a b" beside "a-b") wrote the same NAME_cmb-report files in turn, the last one
    # silently replacing the others; a mask NAME_brainmask.nrrd was left out of the inputs but never used.
    import importlib.util

    script = REPO / "CMBSegmentation" / "Resources" / "Scripts" / "batchProcess.py"
    spec = importlib.util.spec_from_file_location("batchProcess", script)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    for name in ("a.nii", "a.nii.gz", "b x.nrrd", "b-x.nii.gz", "c.nii.gz", "c_brainmask.nrrd", "d.mha"):
        (tmp_path / name).write_bytes(b"")
    inputs = batchInputs.findInputs(tmp_path, "_brainmask")
    assert [p.name for p in inputs] == ["a.nii", "a.nii.gz", "b x.nrrd", "b-x.nii.gz", "c.nii.gz", "d.mha"]
    groups = sorted(sorted(p.name for p in g) for g in batchInputs.nameCollisions(inputs))
    assert groups == [["a.nii", "a.nii.gz"], ["b x.nrrd", "b-x.nii.gz"]]
    assert batchInputs.findMask(tmp_path / "c.nii.gz", "_brainmask") == tmp_path / "c_brainmask.nrrd"
    assert batchInputs.findMask(tmp_path / "d.mha", "_brainmask") is None
    assert batchInputs.findMask(tmp_path / "c.nii.gz", "") is None
    out = tmp_path / "out"
    assert batch.main(["--input-dir", str(tmp_path), "--output-dir", str(out), "--mask-suffix", "_brainmask"]) == 2
    err = capsys.readouterr().err
    assert "would write the same output files: a.nii and a.nii.gz; b x.nrrd and b-x.nii.gz" in err
    assert not out.exists()


def test_a_batch_rerun_leaves_no_earlier_result_beside_an_input_that_failed(tmp_path, capsys):
    # The reports of a previous batch run stayed in the output folder when the input failed this time, so the
    # folder showed an old result as if this run had made it.
    import importlib.util

    pytest.importorskip("slicer")
    script = REPO / "CMBSegmentation" / "Resources" / "Scripts" / "batchProcess.py"
    spec = importlib.util.spec_from_file_location("batchProcess", script)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    (inputs / "broken.nii.gz").write_bytes(b"not a volume")
    stale = [out / f"broken_cmb-{suffix}" for suffix in ("final.nii.gz", "final.seg.nrrd", "report.csv", "report.json")]
    for path in stale:
        path.write_text("from an earlier run")
    stale[3].write_text(json.dumps({"exported_by": "batch", "microbleeds": []}))  # a batch run's report
    (out / "other_cmb-report.json").write_text("{}")  # another input's: left alone
    assert batch.main(["--input-dir", str(inputs), "--output-dir", str(out)]) == 1
    assert not any(path.exists() for path in stale)
    assert (out / "other_cmb-report.json").exists()
    err = capsys.readouterr().err
    assert "broken.nii.gz: FAILED" in err and "outputs of an earlier run were removed" in err


def _batchScript():
    import importlib.util

    script = REPO / "CMBSegmentation" / "Resources" / "Scripts" / "batchProcess.py"
    spec = importlib.util.spec_from_file_location("batchProcess", script)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    return batch


def _fakeProcessOne(processed, fail=None):
    """processOne that writes the four outputs of an input, or some of them and then ``fail``s."""

    def processOne(path, args):
        from CMBSegmentationLib import reportExport

        processed.append(path.name)
        paths = reportExport.outputPaths(args.output_dir, batchInputs.outputBaseName(path))
        for output in paths[: 1 if fail else 3]:
            output.write_text("result")
        if not fail:  # as the batch's export writes it: the next rerun may replace the four
            paths[3].write_text(json.dumps({"exported_by": "batch", "microbleeds": []}))
        if fail is not None:
            fail()

    return processOne


@pytest.fixture
def batch():
    pytest.importorskip("slicer")
    return _batchScript()


def test_a_batch_rerun_into_its_input_folder_never_takes_results_for_scans(batch, tmp_path, monkeypatch, capsys):
    # --output-dir = --input-dir: the rerun read the first run's NAME_cmb-final.nii.gz (a label map) and
    # NAME_cmb-final.seg.nrrd as scans and reported microbleeds found in them.
    (tmp_path / "case.nii.gz").write_bytes(b"")
    (tmp_path / "other_cmb.nii.gz").write_bytes(b"")  # plkd predict's output, its JSON beside it
    (tmp_path / "other_cmb.json").write_text("{}")
    (tmp_path / ".case_cmb-final.nii.gz.partial-x1.nii.gz").write_bytes(b"")  # left by a crash while writing
    processed = []
    monkeypatch.setattr(batch, "processOne", _fakeProcessOne(processed))
    folder = ["--input-dir", str(tmp_path), "--output-dir", str(tmp_path)]
    assert batch.main(folder) == 0
    assert (tmp_path / "case_cmb-final.nii.gz").exists() and (tmp_path / "case_cmb-final.seg.nrrd").exists()
    assert batch.main(folder) == 0
    assert processed == ["case.nii.gz", "case.nii.gz"]
    err = capsys.readouterr().err
    assert "3 result file(s) in the input folder left out" in err and "case_cmb-final.nii.gz" in err


def test_a_batch_leaves_out_label_maps_and_other_contrasts_as_plkd_predict_does(batch, tmp_path, monkeypatch, capsys):
    # Every volume of the folder was run as a scan: the reference label beside it (NAME_CMB, Slicer's NAME-label.nrrd)
    # failed as "a label map, not an MR image" and the batch exited 1; a T1 or a phase image gave "microbleeds".
    for name in ("sub-01_T2S.nii.gz", "sub-02_swi.nrrd", "sub-01_CMB.nii.gz", "sub-02_swi-label.nrrd"):
        (tmp_path / name).write_bytes(b"")
    for name in ("sub-01_T1w.nii.gz", "sub-01_phase.mha", "case_truth.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "x_3.nii.gz").write_bytes(b"")  # dcm2niix names say nothing; its sidecar does
    (tmp_path / "x_3.json").write_text('{"SeriesDescription": "t1_mprage_sag"}')
    processed = []
    monkeypatch.setattr(batch, "processOne", _fakeProcessOne(processed))
    assert batch.main(["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 0
    assert processed == ["sub-01_T2S.nii.gz", "sub-02_swi.nrrd"]
    err = capsys.readouterr().err
    assert "6 file(s) in the input folder are not T2*/SWI scans, left out: " in err
    assert "sub-01_CMB.nii.gz (label map or mask)" in err and "and 3 more" in err


def test_a_batch_takes_volumes_in_capitals_and_names_those_in_formats_it_does_not_read(
    batch, tmp_path, monkeypatch, capsys
):
    # "SCAN.NII.GZ" (Slicer reads it) and a scan in a format the batch does not read (.mgz, .nhdr, ...) were left out
    # without a word: the batch said "1 of 1 input(s) processed" for a folder of four scans.
    for name in ("A.NII.GZ", "A_brainmask.NII.GZ", "b.Nrrd", "c.mgz", "d.nhdr", "e.nii.bz2", "f.SEG.NRRD", "g.txt"):
        (tmp_path / name).write_bytes(b"")
    notScans = []
    inputs = batchInputs.findInputs(tmp_path, "_brainmask", [], notScans)
    assert [p.name for p in inputs] == ["A.NII.GZ", "b.Nrrd"]
    assert batchInputs.findMask(tmp_path / "A.NII.GZ", "_brainmask") == tmp_path / "A_brainmask.NII.GZ"
    assert [batchInputs.outputBaseName(p) for p in inputs] == ["A", "b"]
    processed = []
    monkeypatch.setattr(batch, "processOne", _fakeProcessOne(processed))
    out = tmp_path / "out"
    assert batch.main(["--input-dir", str(tmp_path), "--output-dir", str(out), "--mask-suffix", "_brainmask"]) == 0
    assert processed == ["A.NII.GZ", "b.Nrrd"] and (out / "A_cmb-report.json").exists()
    err = capsys.readouterr().err
    assert "3 file(s) in the input folder are not T2*/SWI scans, left out: c.mgz (.mgz: a format the batch does " in err
    assert "d.nhdr (.nhdr: " in err and "1 result file(s) in the input folder left out: f.SEG.NRRD" in err


def test_a_batch_names_the_dicom_files_and_series_folders_it_leaves_out(batch, tmp_path, monkeypatch, capsys):
    # An archive's DICOM files and series folders beside NIfTI scans were left out without a word: the batch said
    # "1 of 1 input(s) processed" for a folder holding three scans.
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "series-2").mkdir()
    (tmp_path / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # Part 10 preamble, no suffix
    (tmp_path / "IM0002.dcm").write_bytes(b"")
    (tmp_path / "notes").write_bytes(b"no image")
    processed = []
    monkeypatch.setattr(batch, "processOne", _fakeProcessOne(processed))
    assert batch.main(["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 0
    assert processed == ["a.nii.gz"]
    err = capsys.readouterr().err
    assert "2 file(s) in the input folder are not T2*/SWI scans, left out: " in err
    assert "IM0001 (DICOM, 2 file(s) here: load the series with Slicer's DICOM module" in err
    assert "series-2 (a folder: the batch reads the volumes directly in the input folder)" in err
    assert "notes" not in err
    # A rerun with the output folder inside the input folder does not name it.
    assert batch.main(["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 0
    assert "out (a folder" not in capsys.readouterr().err


def test_an_input_whose_earlier_outputs_cannot_be_removed_fails_alone(batch, tmp_path, monkeypatch, capsys):
    # The removal of an earlier run's outputs came before the input's try: one that could not be removed (read-only,
    # a folder of that name) ended the whole batch with a traceback, exit 1 and no summary, the inputs after it never
    # processed.
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        (inputs / name).write_bytes(b"")
    (out / "b_cmb-report.csv").mkdir(parents=True)  # cannot be unlinked
    processed = []
    monkeypatch.setattr(batch, "processOne", _fakeProcessOne(processed))
    assert batch.main(["--input-dir", str(inputs), "--output-dir", str(out)]) == 1
    assert processed == ["a.nii.gz", "c.nii.gz"] and (out / "c_cmb-report.json").exists()
    assert not (out / "b_cmb-report.json").exists()
    captured = capsys.readouterr()
    assert "b.nii.gz: FAILED: " in captured.err and "they are not this run's results" in captured.err
    assert "2 of 3 input(s) processed" in captured.out


def test_a_batch_never_replaces_a_reader_s_reviewed_export(batch, tmp_path, monkeypatch, capsys):
    # The module's Export of a reviewed result into the batch's output folder (same volume name) was replaced by the
    # batch's unreviewed result without a word: the reader's accepted, rejected and added microbleeds were lost.
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (inputs / name).write_bytes(b"")
    reviewed = {"microbleeds": [{"status": "accepted"}, {"status": "not yet seen"}], "n_rejected": 2}
    (out / "a_cmb-report.json").write_text(json.dumps(reviewed))
    (out / "b_cmb-report.json").write_text(json.dumps({"microbleeds": [{"status": "not yet seen"}], "n_rejected": 0}))
    processed = []
    monkeypatch.setattr(batch, "processOne", _fakeProcessOne(processed))
    folders = ["--input-dir", str(inputs), "--output-dir", str(out)]
    assert batch.main(folders) == 2
    assert processed == [] and json.loads((out / "a_cmb-report.json").read_text()) == reviewed
    assert "a_cmb-report.json (3 decision(s))" in capsys.readouterr().err
    (out / "a_cmb-report.json").unlink()  # moved away by the reader
    # b's report of an older version (no exported_by) without decisions may be a reader's too: kept, b fails alone.
    older = (out / "b_cmb-report.json").read_text()
    assert batch.main(folders) == 1 and processed == ["a.nii.gz"]
    assert (out / "b_cmb-report.json").read_text() == older and "b.nii.gz: FAILED: " in capsys.readouterr().err
    (out / "b_cmb-report.json").unlink()
    assert batch.main(folders) == 0 and processed == ["a.nii.gz", "a.nii.gz", "b.nii.gz"]
    assert batch.main(folders) == 0  # a batch's own earlier reports are replaced
    assert json.loads((out / "b_cmb-report.json").read_text())["exported_by"] == "batch"


@pytest.mark.parametrize("how", ["error", "ctrl-c", "sigint", "sigterm"])
def test_an_input_that_fails_or_is_interrupted_half_way_leaves_none_of_its_files(batch, tmp_path, monkeypatch, how):
    # An export that failed after its label map (disk full) left NAME_cmb-final.nii.gz without its report, as a
    # result of this run; Ctrl+C or a scheduler's SIGTERM killed Slicer and left the engine running on.
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        (inputs / name).write_bytes(b"")

    def fail():
        if how == "error":
            raise OSError("No space left on device")
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT if how == "sigint" else signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the batch")

    processed = []
    good = _fakeProcessOne(processed)
    bad = _fakeProcessOne(processed, fail)
    monkeypatch.setattr(batch, "processOne", lambda path, args: (bad if path.name == "b.nii.gz" else good)(path, args))
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)  # as in Slicer, where Ctrl+C ended the process outright
    try:
        code = batch.main(["--input-dir", str(inputs), "--output-dir", str(out)])
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not list(out.glob("b_cmb*")), "the failed input left some of its files"
    assert (out / "a_cmb-report.json").exists()
    if how == "error":
        assert code == 1 and processed == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    else:
        assert code == 130 and processed == ["a.nii.gz", "b.nii.gz"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_the_module_s_same_grid_rule_is_the_engine_s():
    # The module cannot import plkd inside Slicer, so it keeps a copy of the engine's same-grid rule
    # (plkd.volumes.grid_displacement_mm, same_grid_tolerance_mm): both must decide every case alike.
    import numpy as np

    volumes = pytest.importorskip("plkd.volumes")
    from CMBSegmentationLib import volumeIO

    assert volumeIO.SAME_GRID_TOLERANCE_VOXELS == volumes.SAME_GRID_TOLERANCE_VOXELS
    rng = np.random.default_rng(7)
    decisions = []
    for shape in [(24, 28, 10), (200, 220, 40), (1, 5, 3)]:
        base = np.diag([*rng.uniform(0.4, 3.0, 3), 1.0])
        base[:3, 3] = rng.uniform(-90, 90, 3)
        for scale in (0.0, 1e-7, 1e-5, 1e-4, 5e-4, 1e-3, 1e-2):
            other = base + np.r_[rng.normal(0, scale, (3, 4)), np.zeros((1, 4))]
            moved = volumeIO.gridDisplacementMm(base, other, shape)
            assert moved == pytest.approx(volumes.grid_displacement_mm(base, other, shape), rel=1e-12, abs=1e-15)
            assert volumeIO.sameGridToleranceMm(base) == pytest.approx(volumes.same_grid_tolerance_mm(base))
            decisions.append(moved <= volumeIO.sameGridToleranceMm(base))
    assert True in decisions and False in decisions  # the cases reach both sides of the rule


def test_a_file_named_as_a_brain_mask_of_no_scan_is_named_not_left_out_silently(batch, tmp_path, monkeypatch, capsys):
    # Every volume whose name ended with --mask-suffix was left out as a mask without a word, also one beside no scan
    # (a scan named sub-02_bet with --mask-suffix _bet, its original left elsewhere): "1 of 1 input(s) processed".
    for name in ("sub-01.nii.gz", "sub-01_bet.nii.gz", "sub-02_bet.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    processed = []
    monkeypatch.setattr(batch, "processOne", _fakeProcessOne(processed))
    assert (
        batch.main(["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--mask-suffix", "_bet"]) == 0
    )
    assert processed == ["sub-01.nii.gz"]
    err = capsys.readouterr().err
    assert "1 file(s) in the input folder are not T2*/SWI scans, left out: sub-02_bet.nii.gz (" in err
    assert "--mask-suffix _bet" in err and "sub-01_bet" not in err
