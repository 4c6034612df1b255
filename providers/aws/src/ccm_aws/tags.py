"""Cluster ownership tags (ports ``tags.go`` of cloud-provider-aws).

A cluster ID comes from ``[Global] KubernetesClusterID`` (tag ``kubernetes.io/cluster/<id>``) or
the legacy ``KubernetesClusterTag`` (tag ``KubernetesCluster=<id>``). Without one the provider is
"untagged": every resource counts as the cluster's (``has_cluster_id()`` is then False and the
framework refuses to start unless ``--allow-untagged-cloud``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "RESOURCE_LIFECYCLE_OWNED",
    "RESOURCE_LIFECYCLE_SHARED",
    "TAG_CLUSTER_LEGACY",
    "TAG_CLUSTER_PREFIX",
    "ClusterTagging",
]

TAG_CLUSTER_PREFIX = "kubernetes.io/cluster/"
TAG_CLUSTER_LEGACY = "KubernetesCluster"
RESOURCE_LIFECYCLE_OWNED = "owned"
RESOURCE_LIFECYCLE_SHARED = "shared"


@dataclass(frozen=True, slots=True)
class ClusterTagging:
    cluster_id: str = ""
    uses_legacy_tags: bool = False

    @property
    def cluster_tag_key(self) -> str:
        return TAG_CLUSTER_PREFIX + self.cluster_id

    def has_cluster_tag(self, tags: Iterable[Mapping[str, str]]) -> bool:
        """Upstream ``hasClusterTag``: tagged for this cluster (any value), or untagged mode."""
        if not self.cluster_id:
            return True
        for tag in tags:
            key = tag.get("Key", "")
            if key == TAG_CLUSTER_LEGACY and tag.get("Value", "") == self.cluster_id:
                return True
            if key == self.cluster_tag_key:
                return True
        return False

    def build_tags(
        self, lifecycle: str, additional: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Upstream ``buildTags``: ``additional`` plus the ownership tag(s) of this cluster."""
        tags = dict(additional or {})
        if not self.cluster_id:
            return tags
        if self.uses_legacy_tags:
            tags[TAG_CLUSTER_LEGACY] = self.cluster_id
        tags[self.cluster_tag_key] = lifecycle
        return tags
