"""spark-submit entry point for the sequences stage: `spark-submit jobs/sequences.py --config conf/default.yaml ...`."""

import sys

from profiling.cli import main

if __name__ == "__main__":
    main(["sequences", *sys.argv[1:]])
