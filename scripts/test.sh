#!/usr/bin/env bash
# The test command (README, and .ci/run calls exactly this).
# Installs the project with its test extras at the versions in constraints.txt (the lock), then runs
# the whole suite. Real-stack tests need PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379;
# without them they skip with a message (with CI=true nothing skips: it fails instead).
set -euo pipefail
cd "$(dirname "$0")/.."
# constraints.txt pins torch==2.13.0 (the CPU build; an unpinned resolve pulls a multi-GB CUDA build)
python -m pip install -q -c constraints.txt -e '.[test]'
exec python -m pytest "$@"
