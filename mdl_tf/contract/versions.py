"""Version directories of an export base: the numeric directories TF Serving loads.

The contract between mdl_tf.export (a new version is newer than every one on disk) and
serving.manager (serves the newest). Anything else, such as the export's `.tmp-*`
directories, is not a version. Imports no TensorFlow.
"""
import os


def versions_on_disk(base_path):
    """Sorted version numbers under an export base: its directories named by digits only."""
    if not os.path.isdir(base_path):
        return []
    return sorted(int(d) for d in os.listdir(base_path)
                  if d.isascii() and d.isdigit() and os.path.isdir(os.path.join(base_path, d)))
