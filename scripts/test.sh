#!/usr/bin/env bash
# The test command (README, and .ci/run calls exactly this).
# Installs the project with its test extras, then runs the whole suite.
# Real-stack tests need PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379;
# without them they skip with a message (with CI=true they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."
# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[test]'
exec python -m pytest "$@"
