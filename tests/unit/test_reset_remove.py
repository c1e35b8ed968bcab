"""pycni reset's removal of files: idempotent (already gone counts as removed), errors collected, never raised."""

from __future__ import annotations

from pathlib import Path

from pycni.reset import items
from pycni.reset.remove import remove


def path_item(path: Path) -> items.PathItem:
    return items.PathItem(items.STATE, str(path), "test", path=str(path))


def test_files_and_directories_go_and_missing_ones_count_as_removed(tmp_path: Path) -> None:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "f").write_text("x")
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    found = [path_item(tmp_path / n) for n in ("dir", "file", "link", "missing")]
    outcome = remove(found)  # type: ignore[arg-type]
    assert outcome.errors == [] and outcome.removed == found
    assert list(tmp_path.iterdir()) == []
    assert remove(found).removed == found  # type: ignore[arg-type]


def test_a_failure_is_one_line_and_the_rest_still_goes(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").write_text("x")
    stuck = path_item(tmp_path / "file" / "below")  # ENOTDIR: its parent is a file
    outcome = remove([stuck, path_item(tmp_path / "other")])
    assert [i.name for i in outcome.removed] == [str(tmp_path / "other")]
    assert len(outcome.errors) == 1 and outcome.errors[0].startswith(f"could not remove path {stuck.name}  (test): ")
    assert not (tmp_path / "other").exists()
