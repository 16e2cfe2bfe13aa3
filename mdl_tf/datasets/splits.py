"""Deterministic splits shared by the recipes and the preprocessing pipeline."""
import hashlib


def hash_bucket(key: str, buckets: int) -> int:
    """First 8 bytes of md5(key), big-endian, modulo `buckets`."""
    return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[:8], "big") % buckets


def reference_split(key: str) -> str:
    """The shared data READMEs' hash split: bucket 0-7 of 10 train, 8 valid, 9 test.

    Using the same keyed split as the READMEs makes results comparable across libraries.
    """
    bucket = hash_bucket(key, 10)
    return "train" if bucket < 8 else ("valid" if bucket == 8 else "test")
