"""The Helm chart (charts/ccm): renders with the pinned helm for the default values and a few value
sets, validates against the Kubernetes schema, rejects bad values (values.schema.json), grants
exactly the kustomize base's RBAC, and each rendering's container starts its provider (the
daemon's parser on the args, the provider's config parser on the mounted Secret)."""

from __future__ import annotations

import base64
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccm.app import options
from ccm.app.main import provider_extensions
from ccm.cloudprovider import init_cloud_provider
from ccm.testing import assets
from devtools import helm, manifests

REPO = helm.CHART_DIR.parents[1]
#: Value sets rendered and checked like the kustomize overlays (also by the e2e dry-run).
VALUE_SETS = helm.EXAMPLE_VALUES


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """Builds helm with Go on first use (cached afterwards, like kustomize)."""
    return helm.find_helm()


@pytest.fixture(scope="module")
def rendered(helm_binary: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: helm.render(values) for name, values in VALUE_SETS.items()}


def _pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests.daemonset(objects)["spec"]["template"]["spec"]
    return spec


def _rbac(objects: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for obj in objects:
        if obj["kind"] in {"ClusterRole", "Role"}:
            out[obj["kind"], obj["metadata"]["name"]] = obj["rules"]
        elif obj["kind"] in {"ClusterRoleBinding", "RoleBinding", "ServiceAccount"}:
            meta = obj["metadata"]
            out[obj["kind"], f"{meta.get('namespace')}/{meta['name']}"] = (
                obj.get("roleRef"),
                obj.get("subjects"),
            )
    return out


def test_helm_is_the_pinned_version(helm_binary: Path) -> None:
    assert helm.find_helm() == helm_binary  # cached: no rebuild
    assert helm._helm_version_of(helm_binary) == helm.helm_version()


def test_ccm_helm_overrides_the_cached_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, helm_binary: Path
) -> None:
    monkeypatch.setenv("CCM_HELM", str(helm_binary))
    assert helm.find_helm() == helm_binary
    monkeypatch.setenv("CCM_HELM", str(tmp_path / "missing"))
    with pytest.raises(assets.AssetsError, match="CCM_HELM="):
        helm.find_helm()


def test_chart_version_follows_the_distribution() -> None:
    chart = yaml.safe_load((helm.CHART_DIR / "Chart.yaml").read_text("utf-8"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert chart["version"] == chart["appVersion"] == project["version"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_value_set_renders_and_validates(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[name]
    manifests.validate(objects)
    spec = _pod_spec(objects)
    assert spec["dnsPolicy"] == "Default"
    assert spec["hostNetwork"] is True
    for obj in objects:
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert obj["metadata"]["namespace"] == "kube-system", obj["kind"]


def test_default_values_lint(helm_binary: Path) -> None:
    helm.lint()


def test_default_rendering_matches_the_kustomize_fake_overlay(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Same RBAC (names, rules, bindings), tolerations, node selector, probes, security context and
    args as the kustomize base: the two ways to install grant and run the same."""
    chart = rendered["default"]
    kustomized = manifests.render("fake")
    assert _rbac(chart) == _rbac(kustomized)
    ours, theirs = _pod_spec(chart), _pod_spec(kustomized)
    for key in ("tolerations", "nodeSelector", "securityContext", "priorityClassName", "dnsPolicy"):
        assert ours[key] == theirs[key], key
    (c1,), (c2,) = ours["containers"], theirs["containers"]
    for key in ("args", "ports", "livenessProbe", "readinessProbe", "resources", "securityContext"):
        assert c1[key] == c2[key], key
    assert c1["volumeMounts"] == c2["volumeMounts"]
    pdb = manifests.find(chart, "PodDisruptionBudget", "cloud-controller-manager")
    assert (
        pdb["spec"]
        == manifests.find(kustomized, "PodDisruptionBudget", pdb["metadata"]["name"])["spec"]
    )


async def _start_like_the_pod(objects: list[dict[str, Any]], root: Path) -> options.Options:
    args = manifests.container_view(objects, root)
    flag_sets, _ = provider_extensions(args)
    opts = options.parse_args(args, flag_sets=flag_sets)
    cloud = await init_cloud_provider(
        opts.cloud_provider, opts.cloud_config or None, flags=opts.extension_flags
    )
    await cloud.aclose()
    return opts


@pytest.mark.parametrize("name", VALUE_SETS)
async def test_value_set_container_starts_its_provider(
    name: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    opts = await _start_like_the_pod(rendered[name], tmp_path)
    values = VALUE_SETS[name]
    assert opts.cloud_provider == values.get("provider", {}).get("name", "fake")
    assert opts.configure_cloud_routes is values.get("routes", {}).get("enabled", False)
    assert (tmp_path / "etc/ccm/cloud-config").is_file()


async def test_existing_secret_is_mounted_instead(helm_binary: Path, tmp_path: Path) -> None:
    objects = helm.render({"cloudConfig": {"existingSecret": "my-cloud-config"}})
    assert not [o for o in objects if o["kind"] == "Secret"]
    volume = next(v for v in _pod_spec(objects)["volumes"] if v["name"] == "cloud-config")
    assert volume["secret"]["secretName"] == "my-cloud-config"
    mine = (REPO / "manifests/overlays/fake/cloud-config.yaml").read_bytes()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "my-cloud-config", "namespace": "kube-system"},
        "data": {"cloud-config": base64.b64encode(mine).decode()},
    }
    opts = await _start_like_the_pod([*objects, secret], tmp_path)
    assert opts.cloud_provider == "fake"


def test_extras_reach_the_pod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["routes-metrics-extras"]
    spec = _pod_spec(objects)
    (container,) = spec["containers"]
    args = container["args"]
    assert "--configure-cloud-routes=true" in args
    assert "--cluster-cidr=10.244.0.0/16" in args
    assert args[-3:] == ["--v=2", "--kube-api-qps=50", "--tls-min-version=VersionTLS13"]
    assert container["env"] == VALUE_SETS["routes-metrics-extras"]["env"]
    assert {"name": "ca", "configMap": {"name": "cloud-ca"}} in spec["volumes"]
    assert spec["priorityClassName"] == "system-node-critical"
    annotations = manifests.daemonset(objects)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/team"] == "platform"
    assert "checksum/cloud-config" in annotations
    service = manifests.find(objects, "Service", "cloud-controller-manager-metrics")
    assert service["spec"]["selector"] == {"k8s-app": "cloud-controller-manager"}
    reader = manifests.find(objects, "ClusterRole", "ccm-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = manifests.find(objects, "ClusterRoleBinding", "ccm-metrics-reader")
    assert binding["subjects"][0]["name"] == "prometheus"


def test_service_monitor_is_optional(helm_binary: Path) -> None:
    objects = helm.render(
        {"metrics": {"service": {"enabled": True}, "serviceMonitor": {"enabled": True}}}
    )
    monitor = manifests.find(objects, "ServiceMonitor", "cloud-controller-manager")
    assert monitor["spec"]["endpoints"][0]["port"] == "https"
    assert monitor["spec"]["selector"]["matchLabels"] == {"k8s-app": "cloud-controller-manager"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dnsPolicy": "ClusterFirstWithHostnet"}, "/dnsPolicy"),
        ({"nope": True}, "'nope' not allowed"),
        ({"provider": {"name": ""}}, "/provider/name"),
        ({"routes": {"enabled": True}}, "clusterCIDR"),
        ({"securePort": 70000}, "/securePort"),
        ({"extraArgs": ["cloud-provider=x"]}, "/extraArgs/0"),
    ],
)
def test_bad_values_are_rejected(values: dict[str, Any], message: str, helm_binary: Path) -> None:
    with pytest.raises(manifests.ManifestsError, match=message):
        helm.render(values)
    with pytest.raises(manifests.ManifestsError):
        helm.lint(values)


def test_cli_prints_the_rendered_yaml(
    capsys: pytest.CaptureFixture[str], helm_binary: Path, tmp_path: Path
) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("provider: {name: minimal}\n")
    assert helm.main(["-f", str(values)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert "--cloud-provider=minimal" in manifests.container_args([d for d in docs if d])
    values.write_text("dnsPolicy: Bogus\n")
    assert helm.main(["-f", str(values)]) == 1
