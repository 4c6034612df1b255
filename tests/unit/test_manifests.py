"""The deployment manifests (manifests/): every overlay renders with the pinned kustomize, validates
against the Kubernetes schema, and has the DaemonSet/RBAC/PDB shape of docs/deploy.md; the
DaemonSet's args are accepted by the real CLI parser."""

from __future__ import annotations

import base64
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccm import names, wellknown
from ccm.app import options
from ccm.app.main import provider_extensions
from ccm.cloudprovider import init_cloud_provider
from ccm.errors import ConfigError
from ccm.testing import assets
from ccm.testing.fake_cloud import FakeCloud
from devtools import manifests

OVERLAYS = ["fake", "private-cloud"]
PROVIDERS = {"fake": "fake", "private-cloud": "private-cloud"}
#: One image per provider (the Dockerfile's PROVIDER build argument).
IMAGES = {"fake": "ccm:latest", "private-cloud": "ccm-private-cloud:latest"}
REPO = manifests.MANIFESTS_DIR.parent
DS_NAME = "cloud-controller-manager"
SA = {"kind": "ServiceAccount", "name": "cloud-controller-manager", "namespace": "kube-system"}


@pytest.fixture(scope="session")
def kustomize() -> Path:
    """Builds kustomize with Go on first use (cached afterwards, like the control plane)."""
    return assets.find_kustomize()


@pytest.fixture(scope="module")
def rendered(kustomize: Path) -> dict[str, list[dict[str, Any]]]:
    return {overlay: manifests.render(overlay) for overlay in OVERLAYS}


def _pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests.daemonset(objects)["spec"]["template"]["spec"]
    return spec


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod_spec(objects)["containers"]
    assert container["name"] == DS_NAME
    return dict(container)


def _rules(obj: dict[str, Any]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(apiGroup, resource, verb, resourceNames) for every combination a rule grants."""
    out: set[tuple[str, str, str, tuple[str, ...]]] = set()
    for rule in obj["rules"]:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule["verbs"]:
                    out.add((group, resource, verb, tuple(sorted(rule.get("resourceNames", [])))))
    return out


def test_kustomize_is_the_pinned_version(kustomize: Path) -> None:
    assert kustomize.name == "kustomize"
    assert assets.find_kustomize() == kustomize  # cached: no rebuild
    assert assets._kustomize_version_of(kustomize) == assets.kustomize_version()


def test_overlays_are_listed() -> None:
    assert manifests.overlays() == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[overlay]
    manifests.validate(objects)
    kinds = sorted(o["kind"] for o in objects)
    config_kind = "ConfigMap" if overlay == "fake" else "Secret"
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "DaemonSet",
            "PodDisruptionBudget",
            config_kind,
        ]
    )
    for obj in objects:
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert obj["metadata"]["namespace"] == "kube-system", obj["kind"]


def test_base_renders_and_validates(kustomize: Path) -> None:
    manifests.validate(manifests.render("base"))


def test_validate_rejects_unknown_fields_and_kinds(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = yaml.safe_load(yaml.safe_dump(rendered["fake"]))  # deep copy
    _container(objects)["livenessProbe"]["httpGet"]["schema"] = "HTTPS"  # typo of scheme
    manifests.daemonset(objects)["spec"]["template"]["spec"]["containers"][0] = _container(objects)
    with pytest.raises(manifests.ManifestsError, match="'schema' was unexpected"):
        manifests.validate(objects)
    with pytest.raises(manifests.ManifestsError, match="Couldn't find schema"):
        manifests.validate([{"apiVersion": "example.com/v1", "kind": "Nope", "metadata": {}}])


def test_unknown_overlay_is_a_config_error() -> None:
    with pytest.raises(manifests.ManifestsError, match="no overlay 'nope'"):
        manifests.render("nope")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_daemonset_args_parse_with_the_real_cli(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    args = manifests.container_args(rendered[overlay])
    flags = [a.split("=", 1)[0] for a in args]
    assert len(flags) == len(set(flags)), f"a flag is given twice: {args}"
    opts = options.parse_args(args)
    assert opts.cloud_provider == PROVIDERS[overlay]
    assert opts.cloud_config == "/etc/ccm/cloud-config"
    assert opts.leader_elect is True
    assert opts.use_service_account_credentials is True
    assert opts.configure_cloud_routes is False
    assert opts.bind_address == "0.0.0.0"
    assert opts.secure_port == wellknown.CLOUD_CONTROLLER_MANAGER_PORT == 10258
    assert opts.leader_elect_resource_name == wellknown.DEFAULT_LEADER_ELECTION_NAME
    assert opts.leader_elect_resource_namespace == wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_daemonset_shape(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered[overlay]
    ds = manifests.daemonset(objects)
    assert ds["metadata"]["namespace"] == "kube-system"
    assert ds["metadata"]["labels"]["k8s-app"] == DS_NAME
    assert ds["spec"]["selector"] == {"matchLabels": {"k8s-app": DS_NAME}}
    assert ds["spec"]["template"]["metadata"]["labels"]["k8s-app"] == DS_NAME
    spec = _pod_spec(objects)
    assert spec["serviceAccountName"] == SA["name"]
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert spec["hostNetwork"] is True
    # The cluster DNS cannot run before ccm initialises a Node: no ClusterFirst* (bootstrap).
    assert spec["dnsPolicy"] == "Default"
    assert spec["priorityClassName"] == "system-cluster-critical"
    tolerations = {
        (t["key"], t.get("operator", "Equal"), t.get("value"), t["effect"])
        for t in spec["tolerations"]
    }
    assert tolerations == {
        (wellknown.TAINT_UNINITIALIZED, "Equal", "true", "NoSchedule"),
        (wellknown.TAINT_CONTROL_PLANE, "Exists", None, "NoSchedule"),
        ("node-role.kubernetes.io/master", "Exists", None, "NoSchedule"),
        (wellknown.TAINT_NODE_NOT_READY, "Exists", None, "NoSchedule"),
        (wellknown.TAINT_NODE_NOT_READY, "Exists", None, "NoExecute"),
    }
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    container = _container(objects)
    assert container["image"] == IMAGES[overlay]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"scheme": "HTTPS", "port": 10258, "path": path}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["cloud-config"]["mountPath"] == "/etc/ccm"
    assert mounts["cloud-config"]["readOnly"] is True
    assert mounts["tmp"]["mountPath"] == "/tmp"  # the serving certificate's temporary files


@pytest.mark.parametrize(
    ("overlay", "kind", "source"),
    [("fake", "ConfigMap", "configMap"), ("private-cloud", "Secret", "secret")],
)
def test_cloud_config_volume_references_the_rendered_object(
    overlay: str, kind: str, source: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[overlay]
    config = manifests.find(objects, kind, "cloud-controller-manager-config")
    assert "cloud-config" in config["data"]
    volumes = {v["name"]: v for v in _pod_spec(objects)["volumes"]}
    ref = volumes["cloud-config"][source]
    assert ref.get("name", ref.get("secretName")) == config["metadata"]["name"]
    assert set(volumes["cloud-config"]) == {"name", source}


def test_fake_overlay_cloud_config_is_a_valid_fake_config() -> None:
    text = (REPO / "manifests/overlays/fake/cloud-config.yaml").read_text("utf-8")
    cloud = FakeCloud.from_config(text)
    assert cloud.provider_name == "fake"
    assert cloud.load_balancer() is not None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_disruption_budget(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    pdb = manifests.find(rendered[overlay], "PodDisruptionBudget", DS_NAME)
    assert pdb["metadata"]["namespace"] == "kube-system"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {"k8s-app": DS_NAME}}


def test_cluster_role_is_exactly_the_calls_ccm_makes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    role = manifests.find(rendered["fake"], "ClusterRole", "system:cloud-controller-manager")
    assert _rules(role) == {
        ("", "nodes", "get", ()),
        ("", "nodes", "list", ()),
        ("", "nodes", "watch", ()),
        ("", "nodes", "patch", ()),
        ("", "nodes", "delete", ()),
        ("", "nodes/status", "patch", ()),
        ("", "services", "list", ()),
        ("", "services", "watch", ()),
        ("", "services/status", "patch", ()),
        ("", "events", "create", ()),
        ("", "events", "patch", ()),
        ("authentication.k8s.io", "tokenreviews", "create", ()),
        ("authorization.k8s.io", "subjectaccessreviews", "create", ()),
    }
    binding = manifests.find(
        rendered["fake"], "ClusterRoleBinding", "system:cloud-controller-manager"
    )
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [SA]


def test_kube_system_role_leases_and_controller_service_accounts(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    role = manifests.find(rendered["fake"], "Role", "system:cloud-controller-manager")
    assert role["metadata"]["namespace"] == wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE
    lease = (wellknown.DEFAULT_LEADER_ELECTION_NAME,)
    clients = tuple(sorted({c.client_name for c in names.CONTROLLERS}))
    assert _rules(role) == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", lease),
        ("coordination.k8s.io", "leases", "update", lease),
        ("coordination.k8s.io", "leases", "watch", lease),
        ("", "serviceaccounts", "create", ()),
        ("", "serviceaccounts", "get", clients),
        ("", "serviceaccounts/token", "create", clients),
    }
    bindings = {b["roleRef"]["name"]: b for b in rendered["fake"] if b["kind"] == "RoleBinding"}
    assert set(bindings) == {
        "system:cloud-controller-manager",
        "extension-apiserver-authentication-reader",
    }
    assert bindings["extension-apiserver-authentication-reader"]["roleRef"]["kind"] == "Role"
    for binding in bindings.values():
        assert binding["metadata"]["namespace"] == "kube-system"
        assert binding["subjects"] == [SA]


def test_every_rbac_rule_has_a_comment() -> None:
    """Each rule of rbac.yaml is preceded by a comment saying which code path uses it (rules that
    share one comment block follow each other directly)."""
    lines = (REPO / "manifests/base/rbac.yaml").read_text("utf-8").splitlines()
    rules = [i for i, line in enumerate(lines) if re.match(r"^  - apiGroups:", line)]
    assert len(rules) == 12  # 7 in the ClusterRole, 5 in the kube-system Role
    for i in rules:
        previous = lines[i - 1].strip()
        assert previous.startswith(("#", "verbs:")), lines[i]


def test_custom_overlay_of_docs_deploy_md(tmp_path: Path, kustomize: Path) -> None:
    """The "make an overlay of your own" example of docs/deploy.md: own image, own cloud config
    Secret, routes on with --cluster-cidr; it validates and its args parse."""
    overlay = manifests.MANIFESTS_DIR / "overlays" / "private-cloud"
    (tmp_path / "my-cloud-config.yaml").write_text("region: mine\n")
    # The docs' patch, a strategic merge on the container by name (never an args index).
    docs = (REPO / "docs/deploy.md").read_text("utf-8")
    patch = docs.split("<!-- custom-overlay-patch -->")[1].split("```yaml\n")[1].split("```")[0]
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(overlay, tmp_path)],  # must be relative
                "images": [
                    {
                        "name": "ccm-private-cloud",
                        "newName": "registry.example/ccm",
                        "newTag": "v0.1.0",
                    }
                ],
                "secretGenerator": [
                    {
                        "name": "cloud-controller-manager-config",
                        "namespace": "kube-system",
                        "behavior": "replace",
                        "files": ["cloud-config=my-cloud-config.yaml"],
                    }
                ],
                "patches": [{"patch": patch}],
            }
        )
    )
    objects = manifests.render(tmp_path)
    manifests.validate(objects)
    assert _container(objects)["image"] == "registry.example/ccm:v0.1.0"
    secret = manifests.find(objects, "Secret", "cloud-controller-manager-config")
    assert base64.b64decode(secret["data"]["cloud-config"]) == b"region: mine\n"
    volume = next(v for v in _pod_spec(objects)["volumes"] if v["name"] == "cloud-config")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    opts = options.parse_args(manifests.container_args(objects))
    assert opts.configure_cloud_routes is True
    assert [str(net) for net in opts.cluster_cidrs()] == ["10.244.0.0/16"]


async def _start_like_the_pod(objects: list[dict[str, Any]], root: Path) -> options.Options:
    """Parse the container's args with the daemon's parser (provider flags included, as ``ccm``
    does) and build the provider from the mounted cloud config, as the Pod's start-up would."""
    args = manifests.container_view(objects, root)
    flag_sets, _ = provider_extensions(args)
    opts = options.parse_args(args, flag_sets=flag_sets)
    cloud = await init_cloud_provider(
        opts.cloud_provider, opts.cloud_config or None, flags=opts.extension_flags
    )
    await cloud.aclose()
    return opts


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_overlay_container_starts_its_provider(
    overlay: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """A crash-looping overlay fails here: the args parse and the provider's config parser accepts
    the mounted files (the private-cloud config's tokenFile is in the Secret)."""
    opts = await _start_like_the_pod(rendered[overlay], tmp_path)
    assert opts.cloud_provider == PROVIDERS[overlay]
    assert opts.cloud_config == f"{tmp_path}/etc/ccm/cloud-config"


async def test_a_missing_mounted_file_fails_the_start_up_check(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    objects = yaml.safe_load(yaml.safe_dump(rendered["private-cloud"]))  # deep copy
    secret = manifests.find(objects, "Secret", "cloud-controller-manager-config")
    del secret["data"]["token"]
    with pytest.raises(ConfigError, match="token"):
        await _start_like_the_pod(objects, tmp_path)


def test_cli_prints_the_rendered_yaml(capsys: pytest.CaptureFixture[str], kustomize: Path) -> None:
    assert manifests.main(["private-cloud"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert manifests.daemonset(docs)["metadata"]["name"] == DS_NAME
    assert manifests.main(["--list"]) == 0
    assert capsys.readouterr().out.split() == sorted(OVERLAYS)
    assert manifests.main(["nope"]) == 1


def test_dockerfile_runs_ccm_as_non_root() -> None:
    text = (REPO / "Dockerfile").read_text("utf-8")
    assert text.count("\nFROM ") == 2  # multi-stage: builder + runtime
    assert "\nUSER 65532:65532\n" in text
    assert '\nENTRYPOINT ["python", "-m", "ccm"]\n' in text
    ignored = (REPO / ".dockerignore").read_text("utf-8").split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def test_one_image_recipe_per_provider() -> None:
    """The Dockerfile's PROVIDER build argument builds the provider folder into the image; the
    private-cloud overlay's image is the one its documented command builds, and the provider
    depends on the kube-ccm distribution (never the unrelated `ccm` of the package index)."""
    text = (REPO / "Dockerfile").read_text("utf-8")
    assert '\nARG PROVIDER=""\n' in text
    assert '${PROVIDER:+"./${PROVIDER}"}' in text
    assert "--platform linux/amd64,linux/arm64" in text
    image = IMAGES["private-cloud"].split(":")[0]
    assert f"--build-arg PROVIDER=samples/private-cloud -t {image}:latest ." in text
    for folder in ("samples/private-cloud", "samples/minimal-provider"):
        project = tomllib.loads((REPO / folder / "pyproject.toml").read_text("utf-8"))["project"]
        assert "ccm.cloud_providers" in project["entry-points"]
        assert "kube-ccm" in project["dependencies"]
        assert "ccm" not in project["dependencies"]


def test_ccm_kustomize_overrides_the_cached_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kustomize: Path
) -> None:
    monkeypatch.setenv("CCM_KUSTOMIZE", str(kustomize))
    assert assets.find_kustomize() == kustomize
    monkeypatch.setenv("CCM_KUSTOMIZE", str(tmp_path / "missing"))
    with pytest.raises(assets.AssetsError, match="CCM_KUSTOMIZE="):
        assets.find_kustomize()
