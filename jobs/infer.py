"""spark-submit entry point for the infer stage: `spark-submit jobs/infer.py --config conf/default.yaml ...`."""

import sys

from profiling.cli import main

if __name__ == "__main__":
    main(["infer", *sys.argv[1:]])
