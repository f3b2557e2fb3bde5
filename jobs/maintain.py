"""spark-submit entry point for table maintenance: `spark-submit jobs/maintain.py --config conf/default.yaml ...`."""

import sys

from profiling.cli import main

if __name__ == "__main__":
    main(["maintain", *sys.argv[1:]])
