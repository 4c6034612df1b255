"""ProviderConfig: one model read from YAML, JSON or gcfg INI; one-line errors naming the file and
the field; Go durations; secrets from files and the environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import ConfigDict, Field

from ccm.cloudprovider import init_cloud_provider, register, unregister
from ccm.cloudprovider.config import Duration, ProviderConfig, Secret, resolve_secret
from ccm.cloudprovider.durations import parse_duration
from ccm.errors import ConfigError, ConfigFileError


class Retries(ProviderConfig):
    attempts: Annotated[int, Field(ge=1)] = 4
    initial_backoff: Duration = 0.2


class Conf(ProviderConfig):
    endpoint: str
    request_timeout: Duration = 10.0
    token: Secret | None = None
    retries: Retries = Retries()


class GlobalSection(ProviderConfig):
    zone: str = ""
    kubernetes_cluster_tag: str = ""
    disable_security_group_ingress: bool = False
    subnet: list[str] = []
    timeout: Duration = 5.0


class Override(ProviderConfig):
    service: str = ""
    url: str = ""


class IniConf(ProviderConfig):
    global_: GlobalSection = GlobalSection()
    service_override: dict[str, Override] = {}


# -- formats ----------------------------------------------------------------------------------


def test_reads_yaml_with_camel_case_keys() -> None:
    conf = Conf.load(
        b"endpoint: http://x\nrequestTimeout: 1m30s\nretries: {attempts: 2, initialBackoff: 50ms}\n"
    )
    assert conf.endpoint == "http://x"
    assert conf.request_timeout == 90.0
    assert conf.retries == Retries(attempts=2, initial_backoff=0.05)


def test_reads_snake_case_keys_too() -> None:
    assert Conf.load(b"endpoint: e\nrequest_timeout: 2\n").request_timeout == 2.0


def test_reads_json() -> None:
    conf = Conf.load(b'{"endpoint": "http://x", "retries": {"attempts": 7}}')
    assert (conf.endpoint, conf.retries.attempts) == ("http://x", 7)


def test_reads_the_ini_shape_of_upstream_providers() -> None:
    text = b"""
; AWS-style cloud config
[Global]
Zone = us-east-1a
KubernetesClusterTag = "my cluster"
DisableSecurityGroupIngress
Subnet = a
subnet = b
Timeout = 1m
UnknownKey = ignored

[ServiceOverride "1"]
Service = ec2
URL = https://ec2.example

[ServiceOverride "2"]
Service = elb

[UnknownSection]
x = y
"""
    conf = IniConf.load(text)
    assert conf.global_ == GlobalSection(
        zone="us-east-1a",
        kubernetes_cluster_tag="my cluster",
        disable_security_group_ingress=True,
        subnet=["a", "b"],
        timeout=60.0,
    )
    assert conf.service_override == {
        "1": Override(service="ec2", url="https://ec2.example"),
        "2": Override(service="elb"),
    }


def test_ini_names_match_ignoring_case_hyphens_and_underscores() -> None:
    conf = IniConf.load(b'[GLOBAL]\nkubernetes-cluster-tag = t\n[service-override "x"]\nurl=u\n')
    assert conf.global_.kubernetes_cluster_tag == "t"
    assert conf.service_override["x"].url == "u"


def test_ini_single_valued_field_takes_the_last_repeat_and_a_bare_repeat_resets_a_list() -> None:
    conf = IniConf.load(b"[Global]\nZone = a\nZone = b\nSubnet = x\nSubnet\nSubnet = y\n")
    assert conf.global_.zone == "b"
    assert conf.global_.subnet == ["y"]


def test_ini_root_section_sets_the_models_own_fields() -> None:
    class Rooted(Conf):
        ini_root_section = "Global"

    conf = Rooted.load(b"[Global]\nEndpoint = http://x\n[Retries]\nAttempts = 3\n")
    assert (conf.endpoint, conf.retries.attempts) == ("http://x", 3)
    with pytest.raises(ConfigFileError, match="endpoint: Field required"):
        Conf.load(b"[Global]\nEndpoint = http://x\n")  # no root section: [Global] is unknown


def test_ini_section_without_subsection_goes_under_the_empty_key() -> None:
    assert IniConf.load(b"[ServiceOverride]\nService = s\n").service_override == {
        "": Override(service="s")
    }


def test_format_can_be_forced() -> None:
    with pytest.raises(ConfigFileError, match="invalid JSON"):
        Conf.load(b"endpoint: x", format="json")


def test_no_config_gives_the_defaults() -> None:
    assert Retries.load(None) == Retries()
    assert Retries.load(b"") == Retries()


def test_unknown_keys_are_ignored() -> None:
    assert Conf.load(b"endpoint: e\nsurprise: 1\nretries: {what: 2}\n").endpoint == "e"


def test_the_model_is_frozen() -> None:
    conf = Conf.load(b"endpoint: e")
    with pytest.raises(ValueError, match="frozen"):
        conf.endpoint = "other"  # type: ignore[misc]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            b"endpoint: e\nretries: {attempts: 0}\n",
            "cloud.yaml: retries.attempts: Input should be greater than or equal to 1",
            id="constraint",
        ),
        pytest.param(b"retries: {}\n", "cloud.yaml: endpoint: Field required", id="required"),
        pytest.param(
            b"endpoint: e\nrequestTimeout: soon\n",
            "cloud.yaml: requestTimeout: invalid duration 'soon': expected a duration such as "
            "30s, 500ms or 1m30s",
            id="duration",
        ),
        pytest.param(
            b"endpoint: e\nrequestTimeout: soon\nretries: {attempts: x}\n",
            "cloud.yaml: requestTimeout: invalid duration 'soon': expected a duration such as "
            "30s, 500ms or 1m30s (and 1 more)",
            id="several",
        ),
        pytest.param(
            b"- a\n- b\n", "cloud.yaml: expected a mapping at the top, not a list", id="list"
        ),
        pytest.param(b"endpoint: [\n", "cloud.yaml:2: invalid YAML", id="yaml syntax"),
        pytest.param(b"\xff\xfe", "cloud.yaml: not UTF-8", id="not utf-8"),
    ],
)
def test_errors_are_one_line_naming_the_file_and_the_field(text: bytes, expected: str) -> None:
    with pytest.raises(ConfigFileError) as exc:
        Conf.load(text, source="cloud.yaml")
    assert str(exc.value).startswith(expected), str(exc.value)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, ConfigError)


def test_ini_errors_name_the_field_by_its_python_name() -> None:
    with pytest.raises(ConfigFileError) as exc:
        IniConf.load(b"[Global]\nTimeout = later\n", source="/etc/aws.conf")
    assert exc.value.source == "/etc/aws.conf"
    assert exc.value.field == "global_.timeout"
    assert str(exc.value).startswith("/etc/aws.conf: global_.timeout: invalid duration 'later'")


def test_ini_section_that_takes_no_subsection() -> None:
    with pytest.raises(ConfigFileError, match='section \\[global\\] takes no subsection \\("x"\\)'):
        IniConf.load(b'[Global "x"]\nZone = a\n')


async def test_errors_name_the_cloud_config_path_when_the_daemon_builds_the_provider(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_bytes(b"endpoint: e\nretries: {attempts: -1}\n")
    register("config-probe", lambda data: Conf.load(data))  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ConfigError) as exc:
            await init_cloud_provider("config-probe", str(path))
    finally:
        unregister("config-probe")
    assert str(exc.value) == (
        f'could not init cloud provider "config-probe": {path}: retries.attempts: Input should '
        "be greater than or equal to 1"
    )


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"endpoint": "from-file"}')
    assert Conf.load_file(path).endpoint == "from-file"
    with pytest.raises(ConfigFileError, match=f"^{tmp_path / 'missing'}: No such file"):
        Conf.load_file(tmp_path / "missing")


# -- durations and secrets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1m30s", 90.0), ("500ms", 0.5), ("2h45m", 9900.0), ("10", 10.0), (3, 3.0), (0.25, 0.25)],
)
def test_durations_are_go_strings_or_seconds(value: object, seconds: float) -> None:
    doc = json.dumps({"endpoint": "e", "requestTimeout": value})
    assert Conf.load(doc).request_timeout == seconds


def test_secret_literal_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    monkeypatch.setenv("CCM_TEST_TOKEN", "from-env")
    for ref, expected in (
        ("literal", "literal"),
        (f"file:{token}", "from-file"),
        ("env:CCM_TEST_TOKEN", "from-env"),
    ):
        conf = Conf.load(f"endpoint: e\ntoken: {ref}\n".encode())
        assert conf.token is not None
        assert conf.token.get_secret_value() == expected
        assert expected not in repr(conf)  # never printed


def test_secret_errors_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCM_TEST_UNSET", raising=False)
    with pytest.raises(
        ConfigFileError, match=r"^c\.yaml: token: environment variable CCM_TEST_UNSET"
    ):
        Conf.load(b"endpoint: e\ntoken: env:CCM_TEST_UNSET\n", source="c.yaml")
    missing = tmp_path / "nope"
    with pytest.raises(ConfigFileError, match=f"^c.yaml: token: cannot read {missing}: No such"):
        Conf.load(f"endpoint: e\ntoken: file:{missing}\n".encode(), source="c.yaml")


def test_resolve_secret_is_usable_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCM_TEST_TOKEN", "v")
    assert resolve_secret("env:CCM_TEST_TOKEN") == "v"
    assert resolve_secret("plain") == "plain"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("300ms", 0.3),
        ("-1.5h", -5400.0),
        ("+5s", 5.0),
        (".5s", 0.5),
        ("1h2m3s4ms5us6ns", 3723.004005006),
        ("1µs", 1e-6),
    ],
)
def test_parse_duration_follows_go(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "+", "5", "1d", "--1s", "1s-", "s", "1 s"])
def test_parse_duration_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


# -- the example of docs/providers.md ---------------------------------------------------------


class DocGlobal(ProviderConfig):
    zone: str = ""
    kubernetes_cluster_tag: str = ""
    subnet_ids: list[str] = []


class DocOverride(ProviderConfig):
    service: str = ""
    url: str = ""
    signing_region: str = ""


class DocConfig(ProviderConfig):
    ini_root_section = "Global"
    endpoint: str = ""
    token: Secret | None = None
    request_timeout: Annotated[Duration, Field(gt=0)] = 30.0
    global_: DocGlobal = DocGlobal()
    service_override: dict[str, DocOverride] = {}


DOC_YAML = b"""
endpoint: https://api.mycloud.example
token: file:%(token)s
requestTimeout: 1m30s
global: {zone: z1, subnetIds: [a, b], kubernetesClusterTag: my cluster}
serviceOverride: {"1": {service: ec2, url: "https://ec2.internal"}}
"""

DOC_INI = b"""
; INI (gcfg): section and key names case-insensitive, "-" and "_" ignored
[Global]
Endpoint = https://api.mycloud.example
Token = file:%(token)s
RequestTimeout = 90
Zone = z1
SubnetIds = a
SubnetIds = b                ; repeated: kept in order, as a list
KubernetesClusterTag = "my cluster"   ; quotes keep spaces
[ServiceOverride "1"]        ; a subsection: a dict entry, name case-sensitive
Service = ec2
URL = https://ec2.internal
"""


@pytest.mark.parametrize("text", [DOC_YAML, DOC_INI], ids=["yaml", "ini"])
def test_the_documented_example_reads_the_same_from_yaml_and_ini(
    text: bytes, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    conf = DocConfig.load(text % {b"token": str(token).encode()})
    assert conf.endpoint == "https://api.mycloud.example"
    assert conf.token is not None and conf.token.get_secret_value() == "s3cret"
    assert conf.request_timeout == 90.0
    assert conf.global_ == DocGlobal(
        zone="z1", kubernetes_cluster_tag="my cluster", subnet_ids=["a", "b"]
    )
    assert conf.service_override == {"1": DocOverride(service="ec2", url="https://ec2.internal")}


def test_a_subclass_can_refuse_unknown_keys() -> None:
    class Strict(Retries):
        model_config = ConfigDict(extra="forbid")

    assert Strict.load(b"attempts: 2").initial_backoff == 0.2  # the base's settings still apply
    with pytest.raises(ConfigFileError, match=r"c\.yaml: surprise: Extra inputs are not permitted"):
        Strict.load(b"surprise: 1", source="c.yaml")


def test_the_daemon_does_not_load_pydantic_or_tenacity_for_providers_that_do_not_use_them() -> None:
    code = (
        "import sys, ccm.app.main, ccm.cloudprovider; "
        "print(sorted(m for m in ('pydantic', 'tenacity', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
