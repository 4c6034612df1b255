"""``python -m ccm.testing.controlplane``: run a control plane until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ccm import errors
from ccm.testing.controlplane.launcher import ControlPlane
from ccm.testing.controlplane.processes import _tail


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ccm.testing.controlplane``: start, print the kubeconfig, wait."""
    parser = argparse.ArgumentParser(
        prog="python -m ccm.testing.controlplane",
        description="Run a kube-apiserver and etcd on 127.0.0.1 until Ctrl-C or SIGTERM. "
        "Prints the admin kubeconfig path on stdout.",
    )
    parser.add_argument(
        "--apiserver-arg",
        action="append",
        default=[],
        metavar="--FLAG=VALUE",
        help="extra kube-apiserver flag (repeatable)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data dir (logs, certs, etcd data) on exit"
    )
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)  # start() chains its own handler in front of this one
    control_plane = ControlPlane(extra_apiserver_args=args.apiserver_arg, keep_data_dir=args.keep)
    try:
        control_plane.start()
    except errors.CCMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(control_plane.kubeconfig_path, flush=True)
        print(
            f"control plane ready in {control_plane.startup_seconds:.1f} s at {control_plane.url}\n"
            f"  export KUBECONFIG={control_plane.kubeconfig_path}\n"
            f"  logs: {control_plane.data_dir}\n"
            "Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        while not done.wait(1.0):
            # A SIGTERM stops the children from the chained handler before setting `done`.
            if not control_plane.running and not done.is_set():
                for log in (control_plane.etcd_log_path, control_plane.apiserver_log_path):
                    print(f"--- last lines of {log}:\n{_tail(log)}", file=sys.stderr)
                print("error: a control-plane process died", file=sys.stderr)
                return 1
        return 0
    finally:
        control_plane.stop()
