"""A job's destination: default names per task instance, whole-file writes, and no write over another's file.

Every writing and ownership case runs on a local folder, a ``file://`` URI and an ``ObjectStoragePath`` (the object
storage code path, on a local file system), and on S3 (moto's server, started once when the first S3 case runs).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_openai_batch.exceptions import DestinationOwnedError
from airflow_provider_openai_batch.job.destination import (
    OWNER_SUFFIX,
    Destination,
    merged_base,
    merged_names,
    task_instance_owner,
)
from tests._kit.destinations import Place, owner, put
from tests._kit.s3 import BUCKET, empty_bucket, moto_server, s3_path
from tests._kit.ti import FakeTI, context

SCHEDULED = "scheduled__2026-01-01T00:00:00+00:00"

# -- names ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_name", "run_id", "map_index", "base"),
    [
        ("prompts.jsonl", "manual_1", -1, "prompts__manual_1"),
        ("prompts.jsonl", "manual_1", None, "prompts__manual_1"),
        ("prompts.jsonl", SCHEDULED, 3, "prompts__scheduled__2026-01-01T00_00_00_00_00__3"),
        ("s3://bucket/in/prompts.jsonl", "r", 0, "prompts__r__0"),
        ("/data/noext", "r", -1, "noext__r"),
        (".jsonl", "r", -1, ".jsonl__r"),  # Path('.jsonl').stem is the whole name
        ("", "r", -1, "job__r"),
        ("données été.jsonl", "r", -1, "données été__r"),  # a readable stem is kept as it is
        ("in.jsonl", "a/b\\c d", -1, "in__a_b_c_d"),
    ],
)
def test_the_default_names_carry_the_run_and_the_map_index(
    input_name: str, run_id: str, map_index: int | None, base: str
) -> None:
    assert merged_base(input_name, run_id=run_id, map_index=map_index) == base


def test_merged_names_from_the_context() -> None:
    ti = FakeTI(run_id=SCHEDULED, map_index=7)
    out, err = merged_names(context(ti), "in.jsonl")
    assert out == "in__scheduled__2026-01-01T00_00_00_00_00__7_output.jsonl"
    assert err == "in__scheduled__2026-01-01T00_00_00_00_00__7_error.jsonl"


def test_mapped_tasks_and_daily_runs_get_names_of_their_own() -> None:
    names = {
        merged_names(context(FakeTI(run_id=f"scheduled__2026-01-0{day}T00:00:00+00:00", map_index=i)), "in.jsonl")
        for day in range(1, 8)
        for i in (-1, 0, 1, 2)
    }
    assert len(names) == 7 * 4


@pytest.mark.parametrize(
    ("input_name", "run_id"),
    [
        ("in.jsonl", "r" * 300),
        ("in.jsonl", "manual__" + "é:" * 200),
        ("x" * 240 + ".jsonl", "r"),
        ("日本語" * 40 + ".jsonl", SCHEDULED),
        ("tab\there.jsonl", "r"),
    ],
)
def test_long_or_odd_parts_keep_every_name_under_255_bytes(input_name: str, run_id: str, tmp_path: Path) -> None:
    base = merged_base(input_name, run_id=run_id, map_index=123456)
    out = f"{base}_output.jsonl"
    # the name, its owner record and the temporary name an object is uploaded under
    for name in (out, out + OWNER_SUFFIX, f".{out}.01234567.part"):
        assert len(name.encode()) < 255, name
    assert "/" not in out and out.isprintable()
    (tmp_path / out).write_bytes(b"")
    assert base.endswith("__123456")


def test_long_run_ids_that_differ_late_get_different_names() -> None:
    run = "manual__" + "x" * 200
    assert merged_base("in.jsonl", run_id=run + "a") != merged_base("in.jsonl", run_id=run + "b")


def test_the_owner_is_the_task_instance_whatever_the_try() -> None:
    first = task_instance_owner(context(FakeTI(run_id="r", map_index=2, try_number=1)))
    assert first == {"dag_id": "dag", "task_id": "task", "run_id": "r", "map_index": 2}
    assert task_instance_owner(context(FakeTI(run_id="r", map_index=2, try_number=3))) == first


# -- writing and ownership: on a folder, a file:// URI, an ObjectStoragePath and S3 --------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, started only when an S3 case runs."""
    with moto_server() as url:
        yield url


@pytest.fixture(params=["folder", "file_uri", "object_storage_path", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    """A destination in one of its forms, and the folder or prefix it is."""
    folder = tmp_path / "out"
    if request.param == "s3":
        with empty_bucket(request.getfixturevalue("s3_endpoint"), monkeypatch) as fs:
            yield Place(s3_path("out"), fs, f"{BUCKET}/out")
        return
    local = fsspec.filesystem("file")
    if request.param == "folder":
        yield Place(str(folder), local, str(folder))
    elif request.param == "file_uri":
        yield Place(f"file://{folder}", local, str(folder))
    else:
        folder.mkdir()
        yield Place(ObjectStoragePath(f"file://{folder}"), local, str(folder))


def at(place: Place, tmp_path: Path, **kwargs: Any) -> Destination:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return Destination(place.value, work, **kwargs)


def test_a_file_is_written_whole_with_its_owner_recorded(place: Place, tmp_path: Path) -> None:
    dest = at(place, tmp_path, owner=owner("r1"))
    dest.check(["a_output.jsonl"])

    where = put(dest, "a_output.jsonl", b'{"x": 1}\n')

    assert where.endswith("/out/a_output.jsonl")
    assert place.read("a_output.jsonl") == b'{"x": 1}\n'
    record = json.loads(place.read(f"a_output.jsonl{OWNER_SUFFIX}"))
    assert record["owner"] == owner("r1") and record["file"] == "a_output.jsonl" and record["claimed_at"]
    assert place.names() == ["a_output.jsonl", "a_output.jsonl.owner"]  # no temporary file or key left
    assert list((tmp_path / "work").iterdir()) == []


def test_another_task_instances_file_is_refused_before_anything(place: Place, tmp_path: Path) -> None:
    put(at(place, tmp_path, owner=owner("r1", map_index=2)), "a_output.jsonl", b"first\n")

    other = at(place, tmp_path, owner=owner("r2", map_index=2))
    with pytest.raises(DestinationOwnedError) as info:
        other.check(["b_output.jsonl", "a_output.jsonl"])

    error = info.value
    assert isinstance(error, FileExistsError)
    assert error.path.endswith("/out/a_output.jsonl") and error.owner == owner("r1", map_index=2)
    assert "a_output.jsonl" in str(error) and "'r1'" in str(error) and "overwrite=True" in str(error)
    assert place.read("a_output.jsonl") == b"first\n"
    assert place.names() == ["a_output.jsonl", "a_output.jsonl.owner"]  # all names claimed, or none


def test_a_retry_or_a_clear_of_the_same_task_instance_overwrites_its_own(place: Place, tmp_path: Path) -> None:
    put(at(place, tmp_path, owner=owner("r1", try_number=1)), "a_output.jsonl", b"try 1\n")

    again = at(place, tmp_path, owner=owner("r1", try_number=2))
    again.check(["a_output.jsonl"])
    put(again, "a_output.jsonl", b"try 2\n")

    assert place.read("a_output.jsonl") == b"try 2\n"


def test_overwrite_replaces_anothers_file_and_takes_it(place: Place, tmp_path: Path) -> None:
    put(at(place, tmp_path, owner=owner("r1")), "a_output.jsonl", b"theirs\n")

    mine = at(place, tmp_path, owner=owner("r2"), overwrite=True)
    mine.check(["a_output.jsonl"])
    put(mine, "a_output.jsonl", b"mine\n")

    assert place.read("a_output.jsonl") == b"mine\n"
    assert place.owner_of("a_output.jsonl") == owner("r2")
    with pytest.raises(DestinationOwnedError):  # and now the first one is refused
        at(place, tmp_path, owner=owner("r1")).check(["a_output.jsonl"])


@pytest.mark.parametrize("sidecar", [None, b"not json", b"[1, 2]"])
def test_a_file_whose_owner_is_unknown_is_refused(place: Place, tmp_path: Path, sidecar: bytes | None) -> None:
    place.write("a_output.jsonl", b"by hand\n")
    if sidecar is not None:
        place.write(f"a_output.jsonl{OWNER_SUFFIX}", sidecar)

    with pytest.raises(DestinationOwnedError, match="no task instance is recorded") as info:
        at(place, tmp_path, owner=owner()).check(["a_output.jsonl"])
    assert info.value.owner is None
    assert place.read("a_output.jsonl") == b"by hand\n"
    at(place, tmp_path, owner=owner(), overwrite=True).check(["a_output.jsonl"])


def test_a_name_taken_after_the_check_is_refused_at_publish(place: Place, tmp_path: Path) -> None:
    slow = at(place, tmp_path, owner=owner("r1"))
    slow.check(["a_output.jsonl"])
    put(at(place, tmp_path, owner=owner("r2"), overwrite=True), "a_output.jsonl", b"taken\n")

    with slow.writer("a_output.jsonl") as (out, scratch):
        out.write(b"late\n")
    with pytest.raises(DestinationOwnedError, match="'r2'"):
        slow.publish("a_output.jsonl", scratch)

    assert place.read("a_output.jsonl") == b"taken\n"
    assert not scratch.exists()
    assert place.names() == ["a_output.jsonl", "a_output.jsonl.owner"]


def test_a_failed_write_leaves_nothing_in_place(place: Place, tmp_path: Path) -> None:
    dest = at(place, tmp_path, owner=owner())
    with pytest.raises(RuntimeError), dest.writer("a_output.jsonl") as (out, _):
        out.write(b"half")
        raise RuntimeError("merge failed")
    assert place.names() == []
    assert list((tmp_path / "work").iterdir()) == []


def test_a_failed_upload_leaves_the_earlier_file_whole(
    place: Place, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(place.value, str) and "://" not in place.value:
        pytest.skip("a local file is renamed into place, never copied")
    dest = at(place, tmp_path, owner=owner())
    put(dest, "a_output.jsonl", b"earlier\n")

    copy = shutil.copyfileobj

    def broken(source: Any, out: Any, length: int = 0) -> None:
        if isinstance(source, io.BytesIO):  # the owner record goes up; the merged file breaks off
            return copy(source, out, length)
        out.write(b"lat")
        raise ConnectionResetError("connection reset while uploading")

    monkeypatch.setattr(shutil, "copyfileobj", broken)
    with dest.writer("a_output.jsonl") as (out, scratch):
        out.write(b"later\n")
    with pytest.raises(ConnectionResetError, match="while uploading"):
        dest.publish("a_output.jsonl", scratch)

    assert place.read("a_output.jsonl") == b"earlier\n"
    assert place.names() == ["a_output.jsonl", "a_output.jsonl.owner"]  # the temporary key is gone too


def test_discard_removes_only_its_own_stale_file(place: Place, tmp_path: Path) -> None:
    put(at(place, tmp_path, owner=owner("r1")), "mine_error.jsonl", b"stale\n")
    put(at(place, tmp_path, owner=owner("r2")), "theirs_error.jsonl", b"theirs\n")

    dest = at(place, tmp_path, owner=owner("r1"))
    for name in ("mine_error.jsonl", "theirs_error.jsonl"):
        with dest.writer(name) as (_, scratch):
            pass
        dest.discard(name, scratch)

    assert place.names() == ["theirs_error.jsonl", "theirs_error.jsonl.owner"]


def test_without_an_owner_files_are_replaced_as_before(place: Place, tmp_path: Path) -> None:
    put(at(place, tmp_path, owner=owner("r1")), "a_output.jsonl", b"owned\n")
    legacy = at(place, tmp_path)

    legacy.check(["a_output.jsonl"])  # nothing to check
    put(legacy, "a_output.jsonl", b"replaced\n")

    assert place.read("a_output.jsonl") == b"replaced\n"


def test_of_task_instances_claiming_one_free_name_at_once_one_wins(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    start = threading.Barrier(8)
    won: list[int] = []

    def claim(i: int) -> None:
        dest = Destination(folder, owner=owner(f"r{i}"))
        start.wait()
        try:
            dest.check(["a_output.jsonl"])
        except DestinationOwnedError:
            return
        won.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1
    assert json.loads((folder / f"a_output.jsonl{OWNER_SUFFIX}").read_text())["owner"] == owner(f"r{won[0]}")


def test_a_folder_without_hard_links_is_still_claimed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*_: Any) -> None:
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "out"
    Destination(folder, owner=owner("r1")).check(["a_output.jsonl"])
    Destination(folder, owner=owner("r1")).check(["a_output.jsonl"])  # its own again

    with pytest.raises(DestinationOwnedError):
        Destination(folder, owner=owner("r2")).check(["a_output.jsonl"])
    assert sorted(p.name for p in folder.iterdir()) == ["a_output.jsonl.owner"]


def test_object_storage_needs_a_workdir_to_merge_in(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workdir"), Destination(f"file://{tmp_path}").writer("a.jsonl"):
        pass
