"""A sample ccm provider for a small private cloud, and that cloud's HTTP API.

* :mod:`private_cloud.api` — the cloud: machines, a VIP pool, a per-cluster route table, in SQLite.
  Its state is in :mod:`private_cloud.store`, its HTTP handlers in :mod:`private_cloud.handlers`.
* :mod:`private_cloud.provider` — the provider (entry point ``private-cloud``).
* :mod:`private_cloud.config` — its ``--cloud-config`` format.
* :mod:`private_cloud.driver` — its conformance driver.
* :mod:`private_cloud.testing` — the API as a process and an operator's client, for tests and demos.
"""
