"""Migrations read from a git ref: the folder as it was at that commit, not the working tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsflows.errors import ConfigurationError
from tasks.gitref import folder_at_ref
from tests.migrate_support import make_repo


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.sql"))


def test_folder_at_each_ref_and_never_the_working_tree(tmp_path: Path) -> None:
    repo, first, tag = make_repo(tmp_path)
    with folder_at_ref(repo, first, "db/migrations") as folder:
        assert names(folder) == ["001_create_accounts.sql"]
        kept = folder
    assert not kept.exists()  # the copy is temporary
    with folder_at_ref(repo, tag, "db/migrations/") as folder:
        assert names(folder) == [
            "001_create_accounts.sql",
            "002_add_note.sql",
            "003_index_note.sql",
        ]
    with folder_at_ref(repo, "main", "db/migrations") as folder:
        assert "999_uncommitted.sql" not in names(folder)


@pytest.mark.parametrize(
    ("ref", "folder", "message"),
    [
        ("no-such-branch", "db/migrations", "is not known"),
        ("--upload-pack=evil", "db/migrations", "not a valid ref"),
        ("main", "db/elsewhere", "does not exist at main"),
        ("main", "../outside", "inside the repository"),
    ],
)
def test_bad_refs_and_folders_are_clear_errors(
    tmp_path: Path, ref: str, folder: str, message: str
) -> None:
    repo, _, _ = make_repo(tmp_path)
    with pytest.raises(ConfigurationError, match=message), folder_at_ref(repo, ref, folder):
        pass


def test_not_a_repository(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigurationError, match="is not known"),
        folder_at_ref(tmp_path, "main", "x"),
    ):
        pass
