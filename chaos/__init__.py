"""Chaos testing of ccm: the real daemon, replicated, under a churning workload and injected faults.

``python -m chaos [--seed N] [--duration SECONDS] [--faults KIND,...]`` (``make chaos``) starts the
real control plane (:mod:`ccm.testing.controlplane`, with its audit log), two or three ``ccm``
replicas with leader election (:mod:`ccm.testing.daemon`, ``--cloud-provider=fake``, each with its
own client identity) and drives the fake cloud through its state file. Modules:

* :mod:`chaos.plan`: the seeded schedule of workload actions and faults (pure, repeatable);
* :mod:`chaos.cluster`: the system under test (control plane, replicas, fake cloud) and its faults;
* :mod:`chaos.workload`: the simulated kubelets and users, whose changes are retried in order;
* :mod:`chaos.checker`: the invariant checker (audit log, fake-cloud status, apiserver);
* :mod:`chaos.run`: the orchestrator and the command line.

This is the repository's own tooling, like ``bench/``: not part of the installed package.
"""
