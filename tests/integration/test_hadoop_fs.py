"""The driver's Hadoop listings (fruits_spark.hadoop_fs) find every file Spark's own listing hides."""

from __future__ import annotations

import pytest

from fruits_spark import hadoop_fs


@pytest.fixture(params=["os.scandir", "Hadoop listStatus"])
def listing(request, monkeypatch):
    """Both ways a folder is listed: local paths go through os.scandir; force Hadoop's own listing
    (what every other file system uses) to check that the two agree."""
    if request.param == "Hadoop listStatus":
        monkeypatch.setattr(hadoop_fs, "_is_local", lambda fs: False)
    return request.param


def make_tree(root):
    files = {
        "Apple/r_1_100.jpg": b"a" * 10,
        "Apple/_DSC0001.JPG": b"b" * 11,  # Spark hides a leading _
        "Apple/.hidden.jpg": b"c" * 12,  # ... and a leading .
        "Apple/empty.jpg": b"",  # Spark's scans skip 0-byte files
        "Kiwi/deep/er/r_2_100.jpg": b"d" * 13,  # three levels below the root
        "_raw/r_3_100.jpg": b"e" * 14,  # a folder starting with _ is listed
        ".git/objects/x.jpg": b"f" * 15,  # a folder starting with . is not
        "Apple/.Trash/y.jpg": b"g" * 16,  # ... at any depth
        "top.png": b"h" * 17,
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "Apple" / ".r_1_100.jpg.crc").write_bytes(b"crc")  # Hadoop's own checksum file: not listed
    (root / "Apple" / "broken.jpg").symlink_to(root / "nowhere.jpg")  # a broken link holds no file
    (root / "Linked").symlink_to(root / "Kiwi" / "deep")  # a link to a folder is followed
    files["Linked/er/r_2_100.jpg"] = files["Kiwi/deep/er/r_2_100.jpg"]
    return files


def test_list_tree_lists_every_file_with_its_size_and_skips_dot_folders(local_spark, tmp_path, listing):
    files = make_tree(tmp_path)
    found = hadoop_fs.list_tree(local_spark, f"file:{tmp_path}", threads=3)
    expected = {
        f"file:{tmp_path}/{name}": len(data)
        for name, data in files.items()
        if not name.startswith(".git/") and ".Trash" not in name
    }
    assert found == expected


def test_list_tree_takes_a_glob_or_a_file_and_gives_none_when_nothing_matches(local_spark, tmp_path, listing):
    make_tree(tmp_path)
    assert hadoop_fs.list_tree(local_spark, f"file:{tmp_path}/Kiw*") == {
        f"file:{tmp_path}/Kiwi/deep/er/r_2_100.jpg": 13
    }
    assert hadoop_fs.list_tree(local_spark, f"file:{tmp_path}/top.png") == {f"file:{tmp_path}/top.png": 17}
    assert hadoop_fs.list_tree(local_spark, f"file:{tmp_path}/missing") is None


def test_list_folder_lists_only_its_own_files_every_name_included(local_spark, tmp_path, listing):
    make_tree(tmp_path)
    assert hadoop_fs.list_folder(local_spark, f"file:{tmp_path}/Apple") == {
        f"file:{tmp_path}/Apple/{name}": size
        for name, size in {"r_1_100.jpg": 10, "_DSC0001.JPG": 11, ".hidden.jpg": 12, "empty.jpg": 0}.items()
    }
    assert hadoop_fs.list_folder(local_spark, f"file:{tmp_path}/missing") == {}
