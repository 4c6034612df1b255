"""The RBAC self-check's table against the shipped manifest, its SubjectAccessReviews, the table
and JSON renderings and the command's usage errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccm import names
from ccm.doctor import cli, model, rbac, report
from ccm.doctor.model import Finding, Verdict
from ccm.kube.fake import FakeKubeClient, FakeRequest

RBAC_YAML = Path(__file__).parents[3] / "manifests" / "base" / "rbac.yaml"


def _shipped_permissions() -> set[rbac.Permission]:
    out = set()
    for doc in yaml.safe_load_all(RBAC_YAML.read_text()):
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        namespace = doc["metadata"].get("namespace", "")
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            out.add(rbac.Permission(group, resource, verb, name, namespace))
    return out


def test_permission_table_equals_the_shipped_rbac_manifest() -> None:
    assert set(rbac.permissions(model.Scope())) == _shipped_permissions()


def test_lease_permissions_follow_the_lease_flags() -> None:
    scope = model.Scope(lease_name="mine", lease_namespace="ops")
    leases = {p for p in rbac.permissions(scope) if p.resource == "leases" and p.name}
    assert leases == {
        rbac.Permission("coordination.k8s.io", "leases", v, "mine", "ops")
        for v in ("get", "update", "watch")
    }


def test_service_account_names_are_the_controller_client_names() -> None:
    sas = {p.name for p in rbac.permissions(model.Scope()) if p.resource == "serviceaccounts"}
    assert sas - {""} == {c.client_name for c in names.CONTROLLERS}


async def test_rbac_check_lists_denied_permissions() -> None:
    client = FakeKubeClient()
    reviews: list[dict[str, Any]] = []

    def answer(req: FakeRequest) -> dict[str, Any]:
        reviews.append(req.body)
        attrs = req.body["spec"]["resourceAttributes"]
        allowed = not (attrs["resource"] == "nodes" and attrs["verb"] == "delete")
        return {**req.body, "status": {"allowed": allowed}}

    client.add_reactor("create", "subjectaccessreviews", answer)
    (f,) = await report.run_checks(client, model.Scope(), only=["rbac"])
    assert f.verdict is Verdict.FAIL
    assert f.objects == ("delete nodes",)
    assert len(reviews) == len(list(rbac.permissions(model.Scope())))
    spec = reviews[0]["spec"]
    assert spec["user"] == "system:serviceaccount:kube-system:cloud-controller-manager"
    assert "system:serviceaccounts:kube-system" in spec["groups"]
    status = next(
        r
        for r in reviews
        if r["spec"]["resourceAttributes"]["resource"] == "nodes"
        and "subresource" in r["spec"]["resourceAttributes"]
    )
    assert status["spec"]["resourceAttributes"] == {
        "group": "",
        "resource": "nodes",
        "subresource": "status",
        "verb": "patch",
    }


async def test_rbac_check_is_ok_when_everything_is_allowed() -> None:
    client = FakeKubeClient()
    client.add_reactor(
        "create", "subjectaccessreviews", lambda r: {**r.body, "status": {"allowed": True}}
    )
    (f,) = await report.run_checks(client, model.Scope(), only=["rbac"])
    assert f.verdict is Verdict.OK


FINDINGS = [
    Finding(check="leader", question="q", verdict=Verdict.OK, summary="held by a"),
    Finding(
        check="uninitialized-taint",
        question="q",
        verdict=Verdict.FAIL,
        summary="7 of 7 Node(s) uninitialized",
        objects=tuple(f"n{i}" for i in range(7)),
        fix="start the ccm",
    ),
]


def test_table_shows_first_objects_a_count_and_the_fix() -> None:
    text = report.render_table(FINDINGS)
    lines = text.splitlines()
    assert lines[0].split() == ["OK", "leader", "held", "by", "a"]
    assert lines[1].startswith("FAIL  uninitialized-taint  7 of 7")
    assert [ln.strip() for ln in lines[2:9]] == [
        "- n0",
        "- n1",
        "- n2",
        "- n3",
        "- n4",
        "... and 2 more",
        "fix: start the ccm",
    ]
    assert lines[-1] == "1 ok, 0 warn, 1 fail"


def test_json_has_every_object_count_and_the_worst_verdict() -> None:
    doc = json.loads(report.render_json(FINDINGS))
    assert doc["verdict"] == "fail"
    taint = doc["checks"][1]
    assert taint["count"] == 7 and len(taint["objects"]) == 7
    assert taint["verdict"] == "fail" and taint["fix"] == "start the ccm"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--check", "nope"], id="unknown check"),
        pytest.param(["--grace", "soon"], id="bad duration"),
        pytest.param(["--output", "yaml"], id="bad output"),
    ],
)
def test_usage_errors_exit_3_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("ccm doctor: error: ") and err.count("\n") == 1


def test_missing_kubeconfig_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([f"--kubeconfig={tmp_path / 'absent'}"]) == cli.EXIT_USAGE
    assert "absent" in capsys.readouterr().err


def test_ccm_dispatches_the_doctor_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from ccm import cli as main

    assert main.run(["doctor", "--check", "nope"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith("ccm doctor: error:")


def test_every_check_has_its_question() -> None:
    assert list(model.QUESTIONS) == list(report.CHECKS)
