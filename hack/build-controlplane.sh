#!/usr/bin/env bash
# Builds kube-apiserver and etcd into ~/.cache/ccm and prints the folder; logic: ccm/testing/assets.py.
cd "$(dirname "$0")/.." && exec "${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}" -m ccm.testing.assets build "$@"
