"""Build (or reuse from the cache) the upstream Go CCM of ``bench/upstream`` (a small main module
pinned in ``bench/upstream/go.mod``/``go.sum``, fetched from the Go module proxy).

The binary goes to ``<ccm cache>/bench/upstream-ccm-<hash of main.go+go.mod+go.sum>``, so an edit
of the sources gives a new binary and an unchanged tree reuses the cached one. No ``replace`` is
needed: ``k8s.io/cloud-provider`` v0.36.3 is a published module whose go.mod requires the
published ``k8s.io/*`` v0.36.3 modules. Cold build (empty Go module and build caches) takes
minutes on 2 cores; a warm one a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ccm.testing import assets

SOURCE = Path(__file__).resolve().parent / "upstream"


def binary_path() -> Path:
    digest = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update((SOURCE / name).read_bytes())
    return assets.cache_dir() / "bench" / f"upstream-ccm-{digest.hexdigest()[:12]}"


def cached() -> Path | None:
    path = binary_path()
    return path if path.is_file() and os.access(path, os.X_OK) else None


def build(*, log: bool = True) -> Path:
    """Return the cached binary, building it first if needed."""
    target = binary_path()
    if found := cached():
        return found
    go = shutil.which("go")
    if go is None:
        raise assets.GoNotFoundError("go is not on PATH: cannot build bench/upstream")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".tmp{os.getpid()}")
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-trimpath -mod=readonly -buildvcs=false",
    }
    started = time.monotonic()
    if log:
        print(f"bench: building the upstream CCM into {target}", file=sys.stderr, flush=True)
    result = subprocess.run(
        [go, "build", "-ldflags", "-s -w", "-o", str(partial), "."],
        cwd=SOURCE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise assets.AssetBuildError(f"go build of bench/upstream failed:\n{result.stdout[-4000:]}")
    partial.replace(target)
    if log:
        print(f"bench: built in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return target
