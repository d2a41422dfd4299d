"""Local file names for service ids: readable when the id allows it, always safe and under 255 bytes.

A service id is not a file name. OpenAI's ids (``file-abc123``, ``batch_abc123``) happen to be, but a gateway's
need not be: LiteLLM's managed-file ids are about 330 characters of base64, past the 255 bytes a file name may
have on every common file system, and another gateway may put ``/`` or ``..`` in one. A name built from a raw id
then fails, or writes somewhere else, after every batch was billed. :func:`local_file_name` is the one place a
name is made from an id.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_NAME_BYTES", "local_file_name"]

#: The longest name :func:`local_file_name` returns, in bytes (names are ASCII): well under the 255 bytes a
#: name may have on ext4, XFS, APFS and NTFS, and under the 1,024 of an object key, with room for a prefix.
MAX_NAME_BYTES = 160
#: Ids up to this long made only of safe characters are kept whole (every OpenAI and Azure id is).
_KEPT_WHOLE = 96
#: Characters of a hashed id kept in front of its hash, so that a person can still tell what it was.
_PREFIX = 40
#: Hex digits of SHA-256 in a hashed name: 80 bits, so distinct ids never share a name in practice.
_HASH = 20
_LONGEST_SUFFIX = 64
#: A name kept whole: letters, digits, ``_`` and ``-``, starting with a letter or digit. No ``.``: a hashed name
#: always has one before its hash, so no id kept whole can share a name with a hashed one.
_WHOLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SUFFIX = re.compile(r"[A-Za-z0-9._-]*")


def local_file_name(file_id: str, *, suffix: str = ".jsonl") -> str:
    """A file (or object) name for ``file_id``: the id itself when it is short and plain, else a hashed name.

    * ``file-abc123`` -> ``file-abc123.jsonl`` (up to 96 characters of ``[A-Za-z0-9_-]``, starting with a letter
      or digit: the name the provider always gave such ids, so existing paths stay the same);
    * anything else -> up to 40 characters of the id with every run of other characters made ``_``, a ``.``,
      then 20 hex digits of the SHA-256 of the whole id: ``litellm_proxy_YXBwbGljYXRpb24v.3f9a...c1.jsonl``.

    Distinct ids give distinct names (a name kept whole has no ``.`` before the suffix, a hashed one always
    has; hashed names differ by their hash), and every name is ASCII, at most :data:`MAX_NAME_BYTES` bytes,
    never ``.``, ``..``, hidden, or holding a path separator, so it is safe in a folder and in an object key.

    :param file_id: the service's id, any non-empty string (gateways' ids are opaque).
    :param suffix: appended as given, e.g. ``"_output.jsonl"``; up to 64 characters of ``[A-Za-z0-9._-]``, so that
        the name stays safe and short whatever the caller adds.
    :raises ValueError: for an empty id or a suffix outside those bounds (a programming error, not data).
    """
    if not file_id:
        raise ValueError("A file name needs a non-empty id")
    if len(suffix) > _LONGEST_SUFFIX or not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"Suffix {suffix!r}: at most {_LONGEST_SUFFIX} characters of letters, digits, '.', '_', '-'")
    if len(file_id) <= _KEPT_WHOLE and _WHOLE.fullmatch(file_id):
        return file_id + suffix
    prefix = _UNSAFE.sub("_", file_id[:_PREFIX]).strip("_-") or "id"
    digest = hashlib.sha256(file_id.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH]
    return f"{prefix}.{digest}{suffix}"
