"""Broken InstancesBatch providers: one drops the last answer of every batch (wrong length), one
reports a stopped instance as gone in ``instance_exists_batch`` while ``instance_exists`` says it
exists (the batch disagrees with the single call)."""

from __future__ import annotations

from collections.abc import Sequence

from ccm.cloudprovider import Node
from ccm.testing.fake_cloud import FakeCapabilities, FakeCloud


class _BatchFake(FakeCloud):
    def __init__(self) -> None:
        super().__init__(capabilities=FakeCapabilities(instances_batch=True))


class BatchDropsLastAnswer(_BatchFake):
    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        answers = await super().instance_exists_batch(nodes)
        return list(answers)[:-1]


class BatchReportsStoppedGone(_BatchFake):
    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        answers = list(await super().instance_exists_batch(nodes))
        for i, node in enumerate(nodes):
            instance = self.find_instance(node.name, node.provider_id, node)
            if instance is not None and instance.shutdown:
                answers[i] = False
        return answers
