"""The wheel holds every package, every family's package and every preset's files (an editable install hides a
package left out of pyproject.toml)."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = folder.glob("glasszoo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_every_source_package_is_in_the_wheel(wheel_files):
    skipped = {"tests", "bench", "docs", "samples", "pretrained", "build", "dist"}
    for init in ROOT.rglob("__init__.py"):
        relative = init.relative_to(ROOT)
        if relative.parts[0] in skipped or any(part.startswith(".") or part.endswith(".egg-info") for part in relative.parts):
            continue
        assert f"glasszoo/{relative.as_posix()}" in wheel_files, f"{relative.parent} is missing from pyproject.toml's package list"
        for module in init.parent.glob("*.py"):
            assert f"glasszoo/{module.relative_to(ROOT).as_posix()}" in wheel_files, module


def test_every_family_and_preset_file_is_in_the_wheel(wheel_files):
    from glasszoo.zoo.families import families

    for record in families().values():
        package = record.model.partition(":")[0].rsplit(".", 1)[0]
        assert f"{package.replace('.', '/')}/__init__.py" in wheel_files, record.name
    for path in (ROOT / "pretrained").rglob("*"):
        if path.is_file():
            assert f"glasszoo/{path.relative_to(ROOT).as_posix()}" in wheel_files, path
    assert any(name.startswith("glasszoo/samples/") for name in wheel_files)


def test_the_web_page_is_in_the_wheel(wheel_files):
    from glasszoo.export.web_export import PAGE_FILES

    for name in PAGE_FILES:
        assert f"glasszoo/export/web/{name}" in wheel_files, name
