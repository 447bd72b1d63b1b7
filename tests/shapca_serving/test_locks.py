"""Locks are plain files in the output's folder, never followed through links, with one-line
errors (issues 42 and 47)."""

import os

import pytest

from shapca_serving.locks import WriterLock


def test_a_second_writer_is_refused_and_the_lock_is_removed_on_release(tmp_path):
    lock = WriterLock(tmp_path / ".out.lock", "busy").acquire()
    with pytest.raises(ValueError, match="^busy$"):
        WriterLock(tmp_path / ".out.lock", "busy").acquire()
    lock.release()
    assert not (tmp_path / ".out.lock").exists()
    with WriterLock(tmp_path / ".out.lock", "busy"):
        assert (tmp_path / ".out.lock").is_file()


def test_a_lock_path_that_is_a_link_is_never_followed(tmp_path):
    outside = tmp_path / "elsewhere" / "created-by-the-lock"
    outside.parent.mkdir()
    folder = tmp_path / "out"
    folder.mkdir()
    os.symlink(outside, folder / ".out.lock")  # to a missing file outside the folder
    with pytest.raises(ValueError, match=r"^the lock file .*/out/.out.lock is a symbolic link, which is never "
                                         r"followed: remove it$"):
        WriterLock(folder / ".out.lock", "busy").acquire()
    assert not outside.exists()


def test_a_lock_path_that_is_a_folder_or_inside_a_file_is_one_line(tmp_path):
    (tmp_path / ".out.lock").mkdir()
    with pytest.raises(ValueError, match=r"^the lock file .*/.out.lock is a folder: move it away$"):
        WriterLock(tmp_path / ".out.lock", "busy").acquire()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"^.*/file is not a folder \(the lock .out.lock goes inside it\)$"):
        WriterLock(tmp_path / "file" / ".out.lock", "busy").acquire()
