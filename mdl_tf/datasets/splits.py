"""Deterministic splits shared by the recipes."""
import hashlib


def reference_split(key: str) -> str:
    """The shared data READMEs' hash split: md5 bucket 0-7 train, 8 valid, 9 test.

    Using the same keyed split as the READMEs makes results comparable across libraries.
    """
    bucket = int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[:8], "big") % 10
    return "train" if bucket < 8 else ("valid" if bucket == 8 else "test")
