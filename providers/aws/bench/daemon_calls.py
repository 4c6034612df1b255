"""AWS API calls of a running ``ccm`` daemon with the AWS provider, on moto and a real apiserver.

``python providers/aws/bench/daemon_calls.py --nodes 100`` launches that many instances in moto's
EC2, registers a Node for each (named by its private DNS name, tainted, as a kubelet with
``--cloud-provider=external`` does), starts ``ccm --cloud-provider aws`` and counts, from the
provider's action log (``CCM_AWS_ACTION_LOG``), the AWS calls of initializing every Node, then of
three lifecycle sweeps over the same Nodes marked NotReady (``--node-monitor-period=2s``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from ccm_aws.api import ACTION_LOG_ENV
from ccm_aws.testing import Ec2Console, MotoServer, aws_test_env, cloud_config, patched_environ

from ccm.testing import kubelet
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    args = parser.parse_args()
    from kubernetes import client, config

    tmp = Path(tempfile.mkdtemp(prefix="ccm-aws-bench-"))
    log = tmp / "actions.log"
    log.touch()
    with (
        patched_environ({**aws_test_env(), ACTION_LOG_ENV: str(log)}),
        MotoServer() as moto,
        ControlPlane() as cp,
    ):
        console = Ec2Console(moto.url)
        network = console.create_network("bench", cidr="10.78.0.0/16")
        subnets = list(network["subnets"].values())
        names = [
            str(console.run_instance(subnets[i % 2], cluster_id="bench")["PrivateDnsName"])
            for i in range(args.nodes)
        ]
        core = client.CoreV1Api(config.new_client_from_config(str(cp.kubeconfig_path)))
        for name in names:
            kubelet.register_node(core, name)
        conf = tmp / "cloud.conf"
        conf.write_text(cloud_config(moto.url, KubernetesClusterID="bench"))
        daemon = Daemon(
            [
                "--cloud-provider=aws",
                f"--cloud-config={conf}",
                f"--kubeconfig={cp.kubeconfig_path}",
                "--leader-elect=false",
                "--node-monitor-period=2s",
                "--configure-cloud-routes=false",
            ],
            log_dir=tmp,
        )
        with daemon:
            started = time.monotonic()
            while True:
                nodes = core.list_node().items
                if not any(kubelet.is_uninitialized(n) for n in nodes):
                    break
                time.sleep(0.2)
            init_seconds = time.monotonic() - started
            init = Counter(log.read_text().split())
            for name in names:
                kubelet.set_ready(core, name, False)
            before = sum(Counter(log.read_text().split()).values())
            time.sleep(6.5)  # three sweeps of 2 s
            sweeps = Counter(log.read_text().split())
    swept = sum(sweeps.values()) - before
    print(f"{args.nodes} Nodes, ccm daemon with --cloud-provider aws on moto and kube-apiserver")
    print(f"initialization ({init_seconds:.1f}s): {dict(init)}")
    print(f"  {sum(init.values()) / args.nodes:.3f} AWS calls per Node")
    print(f"~3 lifecycle sweeps of NotReady Nodes: {swept} AWS calls")


if __name__ == "__main__":
    main()
