"""Small text files (vocabularies, statistics, schema, reports) through Beam's FileSystems,
so the output directory may be local or remote (gs://, s3://, hdfs://)."""
from __future__ import annotations

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def join(directory: str, *parts: str) -> str:
    return FileSystems.join(directory, *parts)


def write_text(path: str, content: str) -> None:
    # Uncompressed whatever the name: these files are read as plain text.
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write(content.encode("utf-8"))


def read_text(path: str) -> str:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read().decode("utf-8")


def is_empty_dir(directory: str) -> bool:
    """True when nothing exists under `directory` (or it does not exist)."""
    pattern = join(directory, "**")
    return not any(r.metadata_list for r in FileSystems.match([pattern]))


def is_local(path: str) -> bool:
    return "://" not in path
