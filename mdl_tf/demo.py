"""`make demo`: train MDL on the built-in dataset, evaluate, export, then serve and query it.

    python -m mdl_tf.demo [--model_dir runs/demo]
"""
import argparse

import mdl_tf  # noqa: F401
from absl import logging

from mdl_tf import train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", default="runs/demo")
    args = p.parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    result = train.train(train.TrainOptions(model_dir=args.model_dir))
    print(f"\nSavedModel: {result['export_path']}")
    return result


if __name__ == "__main__":
    main()
