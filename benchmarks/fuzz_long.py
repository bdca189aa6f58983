"""The V2 fuzzing of the test suite, long: 10,000 examples per test against a server on a LocalCluster.

It runs the three hypothesis tests of ``tests/integration/serving/test_v2_bad_input.py``
(random JSON, random bytes with and without a binary header, mutations of valid
JSON and binary requests) against the server whose batches run on Dask workers,
then the check that the server still serves and answers correctly. Only 4xx
(or 200 for a mutation that stayed valid) may come back. Outside the default
suite: about 45 ms an example here, so 25 minutes or so at the default.

Run: ``python benchmarks/fuzz_long.py [--examples N] [--also-inprocess]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/integration/serving/test_v2_bad_input.py"


def main(examples: int, inprocess: bool) -> int:
    selected = "fuzz or serves_after" if inprocess else "(fuzz or serves_after) and cluster"
    env = {**os.environ, "WORKBENCH_FUZZ_EXAMPLES": str(examples)}
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", TESTS, "-k", selected, "-q", "-p", "no:cacheprovider",
                           "-o", "timeout=0"], cwd=REPO_ROOT, env=env)
    print(f"fuzz_long: {examples} examples per test ({'in-process and ' if inprocess else ''}LocalCluster), "
          f"{time.monotonic() - began:.0f} s, {'passed' if done.returncode == 0 else 'FAILED'}")
    return done.returncode


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="hypothesis examples per test")
    parser.add_argument("--also-inprocess", action="store_true", help="fuzz the in-process server too")
    args = parser.parse_args()
    sys.exit(main(args.examples, args.also_inprocess))
