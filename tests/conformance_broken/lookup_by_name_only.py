"""Lookups ignore ``spec.providerID`` and find machines by the Node's name only (a re-created
machine answers for the stale Node of the old one)."""

from __future__ import annotations

from ccm.cloudprovider import Node
from ccm.testing.fake_cloud import FakeCloud, FakeInstance


class LooksUpByNameOnly(FakeCloud):
    def find_instance(
        self, name: str = "", provider_id: str = "", node: Node | None = None
    ) -> FakeInstance | None:
        return super().find_instance(name, "", node)
