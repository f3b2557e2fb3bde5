"""spark-submit entry point for the train stage: `spark-submit jobs/train.py --config conf/default.yaml ...`."""

import sys

from profiling.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
