"""The Slicer extension's CMake files: every module file is listed (or it silently goes missing from the
packaged extension), every listed file exists, and the top level has the calls an extension needs."""

from __future__ import annotations

import re
import struct
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "CMBSegmentation"


def _code(path: Path) -> str:
    """CMake source without comments (a "#" that starts a word; URLs may hold "#anchor")."""
    return re.sub(r"(?m)(^|\s)#.*$", r"\1", path.read_text(encoding="utf-8"))


def _set_list(code: str, name: str) -> list[str]:
    match = re.search(rf"set\(\s*{name}\s+(.*?)\)", code, re.S)
    assert match, f"set({name} ...) not found"
    return [item.replace("${MODULE_NAME}", "CMBSegmentation") for item in match.group(1).split()]


def _on_disk(predicate) -> set[str]:
    return {
        p.relative_to(MODULE).as_posix()
        for p in MODULE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and predicate(p.relative_to(MODULE))
    }


def test_every_module_script_is_listed_and_exists():
    listed = _set_list(_code(MODULE / "CMakeLists.txt"), "MODULE_PYTHON_SCRIPTS")
    assert len(listed) == len(set(listed)), "a script is listed twice"
    scripts = _on_disk(lambda rel: rel.suffix == ".py" and rel.parts[0] not in ("Resources", "Testing"))
    assert set(listed) == scripts, f"missing from CMake: {scripts - set(listed)}; not on disk: {set(listed) - scripts}"
    assert "CMBSegmentationLib/__init__.py" in listed


def test_every_resource_is_listed_and_exists():
    listed = _set_list(_code(MODULE / "CMakeLists.txt"), "MODULE_PYTHON_RESOURCES")
    resources = _on_disk(lambda rel: rel.parts[0] == "Resources")
    assert set(listed) == resources, (
        f"missing from CMake: {resources - set(listed)}; not on disk: {set(listed) - resources}"
    )
    assert {"Resources/UI/CMBSegmentation.ui", "Resources/Icons/CMBSegmentation.png"} <= set(listed)


def test_module_is_built_with_generic_tests_and_registers_its_unit_test():
    code = _code(MODULE / "CMakeLists.txt")
    build = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", code, re.S).group(1).split()
    for word in ("NAME", "${MODULE_NAME}", "SCRIPTS", "${MODULE_PYTHON_SCRIPTS}", "RESOURCES",
                 "${MODULE_PYTHON_RESOURCES}", "WITH_GENERIC_TESTS"):  # fmt: skip
        assert word in build
    testing = re.search(r"if\(\s*BUILD_TESTING\s*\)(.*?)endif\(\)\s*$", code, re.S)
    assert testing and re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py", testing.group(1))
    assert "class CMBSegmentationTest(ScriptedLoadableModuleTest)" in (MODULE / "CMBSegmentation.py").read_text()


def test_engine_sources_are_packaged_where_the_module_looks_for_them():
    code = _code(MODULE / "CMakeLists.txt")
    assert re.search(r"install\(\s*DIRECTORY\s+\$\{_plkd_source_dir\}/", code)
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources/PLKDTraining" in code
    assert "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/Resources/PLKDTraining" in code  # build tree copy
    source = re.search(r"set\(_plkd_source_dir\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", code).group(1)
    assert (MODULE / source / "pyproject.toml").is_file()


def test_top_level_is_a_complete_slicer_extension_in_the_right_order():
    code = _code(REPO / "CMakeLists.txt")
    assert re.search(r"project\(\s*CMBSegmentation\s*\)", code)
    values = dict(re.findall(r'set\(\s*(EXTENSION_\w+)\s+"([^"]*)"\s*\)', code))
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS"):  # fmt: skip
        assert values.get(key), f"{key} is empty"
    assert values["EXTENSION_CATEGORY"] == "Segmentation"
    assert "PyTorch" in values["EXTENSION_DEPENDS"].split()
    assert values["EXTENSION_ICONURL"].endswith("Resources/Icons/CMBSegmentation.png")
    calls = [
        r"find_package\(\s*Slicer\s+REQUIRED\s*\)",
        r"include\(\s*\$\{Slicer_USE_FILE\}\s*\)",
        r"add_subdirectory\(\s*CMBSegmentation\s*\)",
        r"include\(\s*\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\s*\)",
        r"include\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)",
    ]
    positions = []
    for call in calls:
        match = re.search(call, code)
        assert match, f"missing: {call}"
        positions.append(match.start())
    assert positions == sorted(positions), "calls are out of order"


def test_icons_are_128_pixel_pngs():
    for path in (REPO / "Resources/Icons/CMBSegmentation.png", MODULE / "Resources/Icons/CMBSegmentation.png"):
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", header[16:24]) == (128, 128)
