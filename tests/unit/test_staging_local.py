"""Staging a checkpoint into local storage without copying what need not be copied (issue #16).

A folder the caller deletes afterwards is moved into the staging (same inode, no copy); one the user keeps is
cloned or copied, never hard-linked: ``torch.save`` to the same path later truncates and rewrites that inode
in place, which must not reach a staged (or committed) checkpoint. Another filesystem (``/dev/shm``, a tmpfs)
makes the rename fail with EXDEV, and the files are copied. The manifest's sizes are right in every case, and
its sha256 is there (and right) wherever the bytes were copied: a move or a clone stays O(1), unread."""

import hashlib
import os

import pytest
import torch

from rafter._storage import Storage


def folder(path, files):
    os.makedirs(path / "sub", exist_ok=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()}


FILES = {"model.pt": b"weights" * 1000, "sub/opt.bin": b"state", "empty": b""}


def test_a_kept_folder_is_copied_and_a_later_torch_save_in_place_does_not_reach_the_staged_file(tmp_path):
    src, dest = tmp_path / "ckpt", str(tmp_path / "results" / ".staging" / "0")
    expected = folder(src, FILES)
    storage = Storage(str(tmp_path / "results"))
    assert storage.upload_dir(str(src), dest) == expected
    assert sorted(os.listdir(src)) == ["empty", "model.pt", "sub"]  # the user's folder is intact
    staged = os.path.join(dest, "model.pt")
    assert os.stat(staged).st_ino != os.stat(src / "model.pt").st_ino and os.stat(staged).st_nlink == 1
    torch.save({"w": torch.zeros(3)}, src / "model.pt")  # opens with O_TRUNC: rewrites the user's inode
    with open(staged, "rb") as f:
        assert f.read() == FILES["model.pt"]


def test_a_folder_the_caller_deletes_is_moved_file_by_file_with_no_copy(tmp_path):
    src, dest = tmp_path / "ckpt", str(tmp_path / "results" / ".staging" / "0")
    expected = folder(src, FILES)
    inode = os.stat(src / "model.pt").st_ino
    storage = Storage(str(tmp_path / "results"))
    moved = {name: {"size": info["size"]} for name, info in expected.items()}  # never read: no hash
    assert storage.upload_dir(str(src), dest, consume=True) == moved
    assert os.stat(os.path.join(dest, "model.pt")).st_ino == inode  # moved, not copied
    assert not os.path.lexists(src / "model.pt") and not os.path.lexists(src / "sub" / "opt.bin")


def test_a_folder_with_a_link_is_copied_as_its_content_even_when_it_may_be_consumed(tmp_path):
    src, dest = tmp_path / "ckpt", str(tmp_path / "results" / ".staging" / "0")
    expected = folder(src, FILES)
    os.symlink(src / "model.pt", src / "z_alias.pt")  # walked after model.pt: moving that would break the link
    expected["z_alias.pt"] = expected["model.pt"]
    assert Storage(str(tmp_path / "results")).upload_dir(str(src), dest, consume=True) == expected
    assert not os.path.islink(os.path.join(dest, "z_alias.pt"))  # staged as its content, never as a link
    with open(os.path.join(dest, "z_alias.pt"), "rb") as f:
        assert f.read() == FILES["model.pt"]


def test_another_filesystem_is_copied_even_when_the_folder_may_be_consumed(tmp_path):
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's folder")
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        src = tmp_path.__class__(shm) / "ckpt"
        expected = folder(src, FILES)
        dest = str(tmp_path / "results" / ".staging" / "0")
        with pytest.raises(OSError) as exc:
            os.rename(src / "model.pt", tmp_path / "probe")
        assert exc.value.errno == __import__("errno").EXDEV  # what the staging meets, for real
        assert Storage(str(tmp_path / "results")).upload_dir(str(src), dest, consume=True) == expected
        with open(os.path.join(dest, "sub", "opt.bin"), "rb") as f:
            assert f.read() == b"state"


def test_a_folder_of_plain_files_is_moved_whole_with_the_storage_folders_mode(tmp_path):
    import stat
    import tempfile

    src = tempfile.mkdtemp(dir=tmp_path)  # mode 0700, as mkdtemp makes it
    expected = folder(tmp_path.__class__(src), FILES)
    os.chmod(os.path.join(src, "sub"), 0o700)
    dest = str(tmp_path / "results" / ".staging" / "attempt_1_report_0" / "rank_0")
    got = Storage(str(tmp_path / "results")).upload_dir(src, dest, consume=True)
    assert got == {name: {"size": info["size"]} for name, info in expected.items()}
    assert not os.path.lexists(src)  # the folder itself went: one rename
    parent_mode = stat.S_IMODE(os.stat(os.path.dirname(dest)).st_mode)
    for path in (dest, os.path.join(dest, "sub")):
        assert stat.S_IMODE(os.stat(path).st_mode) == parent_mode  # not mkdtemp's 0700


def test_a_folder_with_a_linked_subfolder_is_staged_file_by_file_and_the_link_is_not_staged(tmp_path):
    src, dest = tmp_path / "ckpt", str(tmp_path / "results" / ".staging" / "0")
    folder(src, FILES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_bytes(b"not yours")
    os.symlink(elsewhere, src / "linked")
    got = Storage(str(tmp_path / "results")).upload_dir(str(src), dest, consume=True)
    assert sorted(got) == ["empty", "model.pt", "sub/opt.bin"]
    assert not os.path.lexists(os.path.join(dest, "linked"))  # never a link inside a staged checkpoint
    assert (elsewhere / "secret").read_bytes() == b"not yours"
