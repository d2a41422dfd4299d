"""local_file_name: a safe, short, distinct file name for any service id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_provider_openai_batch.job.names import MAX_NAME_BYTES, local_file_name

#: A LiteLLM-style managed-file id: URL-safe base64 of the provider, model and upstream id, about 330 characters.
LITELLM_ID = "bGl0ZWxsbV9wcm94eTphcHBsaWNhdGlvbi9vY3RldC1zdHJlYW07dW5pZmllZF9pZCw" + "Zm9vYmFy" * 33
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def assert_safe(name: str) -> None:
    """ASCII, short, no separator, never hidden, ``.`` or ``..``: writable as a file and as an object key."""
    assert SAFE.fullmatch(name), name
    assert len(name.encode()) <= MAX_NAME_BYTES < 255
    assert name not in (".", "..")


@pytest.mark.parametrize(
    ("file_id", "suffix", "name"),
    [
        ("file-abc123", ".jsonl", "file-abc123.jsonl"),
        ("batch_69a1f2", "_output.jsonl", "batch_69a1f2_output.jsonl"),
        ("file-" + "x" * 91, "", "file-" + "x" * 91),  # 96 characters: still kept whole
    ],
)
def test_a_plain_short_id_is_the_name_it_always_was(file_id: str, suffix: str, name: str) -> None:
    assert local_file_name(file_id, suffix=suffix) == name


def test_a_330_character_id_gets_a_short_readable_hashed_name(tmp_path: Path) -> None:
    assert len(LITELLM_ID) >= 330

    name = local_file_name(LITELLM_ID)

    assert_safe(name)
    assert name.startswith(LITELLM_ID[:40] + ".") and name.endswith(".jsonl")
    assert len(name) == 40 + 1 + 20 + len(".jsonl")
    (tmp_path / name).write_bytes(b"{}\n")  # a real file system takes it
    assert local_file_name(LITELLM_ID) == name  # the same id, the same name: a retry finds its file


@pytest.mark.parametrize(
    "file_id",
    [
        "a/b",
        "../../etc/passwd",
        "..",
        ".",
        ".hidden",
        "-rf",
        "file id with spaces",
        "fichier-é-ü-日本語",
        "emoji-🙂",
        "back\\slash",
        "colon:and*star?",
        "file-abc.jsonl",  # a dot: no id kept whole may look like a hashed name
        "\ud800lone-surrogate",
    ],
)
def test_an_unsafe_id_never_escapes_the_folder(file_id: str, tmp_path: Path) -> None:
    name = local_file_name(file_id)

    assert_safe(name)
    assert "/" not in name and "\\" not in name and not name.startswith((".", "-"))
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_ids_differing_only_after_200_characters_get_different_names() -> None:
    start = "file-" + "q" * 200
    names = {local_file_name(start + tail) for tail in ("a", "b", "aa", "")}
    assert len(names) == 4
    assert all(name.startswith("file-" + "q" * 35 + ".") for name in names)


def test_distinct_ids_never_share_a_name() -> None:
    # Ids that sanitise alike, an id shaped like another's hashed name, and ids kept whole.
    ids = ["a/b", "a_b", "a b", "a:b", "a__b", "A_b", "ab", "a-b", LITELLM_ID, LITELLM_ID[:-1]]
    ids.append(local_file_name("a/b", suffix=""))  # 'a_b.<hash>' as an id: has a dot, so it is hashed itself
    ids += [f"file-{i}" for i in range(200)] + [f"file/{i}" for i in range(200)]
    names = [local_file_name(file_id) for file_id in ids]
    assert len(set(names)) == len(ids)


def test_an_id_of_only_unsafe_characters_still_has_a_prefix() -> None:
    name = local_file_name("///", suffix="")
    assert re.fullmatch(r"id\.[0-9a-f]{20}", name)


@pytest.mark.parametrize("suffix", ["/x.jsonl", "é.jsonl", "x" * 65, " .jsonl"])
def test_an_unsafe_or_long_suffix_is_refused(suffix: str) -> None:
    with pytest.raises(ValueError, match="Suffix"):
        local_file_name("file-abc", suffix=suffix)


def test_an_empty_id_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        local_file_name("")


def test_the_longest_names_stay_under_the_bound() -> None:
    suffix = "_" * 64
    assert len(local_file_name("f" * 96, suffix=suffix)) == MAX_NAME_BYTES
    assert len(local_file_name("f" * 5000, suffix=suffix)) < MAX_NAME_BYTES
