"""A voice's identity in the cache key: one stat() per ask, a new digest for every new file version."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from voip_sos.voice.models import _digest_cached, file_digest


def test_digest_follows_the_file_behind_a_symlink_and_is_computed_once(tmp_path: Path) -> None:
    old, new, link = tmp_path / "old.onnx", tmp_path / "new.onnx", tmp_path / "voice.onnx"
    old.write_bytes(b"old model")
    new.write_bytes(b"new model, other size")
    link.symlink_to(old)
    before = _digest_cached.cache_info().misses
    assert file_digest(str(link)) == hashlib.sha256(b"old model").hexdigest()
    assert file_digest(str(link)) == hashlib.sha256(b"old model").hexdigest()
    assert _digest_cached.cache_info().misses == before + 1  # the second ask hashed nothing
    link.unlink()
    link.symlink_to(new)  # the operator swaps the model: the key must change at once
    assert file_digest(str(link)) == hashlib.sha256(b"new model, other size").hexdigest()
    old.write_bytes(b"old model")  # rewritten in place, same size: a new inode or mtime
    os.utime(old, ns=(1, 1))
    os.replace(old, new)
    assert file_digest(str(link)) == hashlib.sha256(b"old model").hexdigest()
