"""spark-submit entry point for the whole pipeline: `spark-submit jobs/pipeline.py --config conf/default.yaml ...`."""

import sys

from profiling.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
