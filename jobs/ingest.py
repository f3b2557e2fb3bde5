"""spark-submit entry point for the ingest stage: `spark-submit jobs/ingest.py --config conf/default.yaml ...`."""

import sys

from profiling.cli import main

if __name__ == "__main__":
    main(["ingest", *sys.argv[1:]])
