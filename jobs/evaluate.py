"""spark-submit entry point for the evaluate stage: `spark-submit jobs/evaluate.py --config conf/default.yaml ...`."""

import sys

from profiling.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
