"""The INI cloud config: upstream's fields and format, one-line errors naming the field, and the
region's sources in upstream's order."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from ccm_aws.api import resolve_region
from ccm_aws.config import AWSConfig, az_to_region
from ccm_aws.testing import patched_environ

from ccm.errors import ConfigError

FULL = b"""
; comment
[Global]
Zone = us-west-2a
VPC = vpc-0123
SubnetID = subnet-0123  # trailing comment
RouteTableID = "rtb-0123"
RoleARN = arn:aws:iam::123456789012:role/ccm
KubernetesClusterID = prod
DisableSecurityGroupIngress = true
ElbSecurityGroup = sg-0123
NodeIPFamilies = ipv6
NodeIPFamilies = ipv4
SomethingNew = ignored

[ServiceOverride "1"]
Service = ec2
Region = us-west-2
URL = https://ec2.example.com
SigningRegion = us-west-2
SigningName = ec2

[Unknown]
x = y
"""


def test_reads_every_global_field_and_service_override() -> None:
    cfg = AWSConfig.parse(FULL)
    glob = cfg.global_
    assert cfg.zone == glob.zone == "us-west-2a"
    assert glob.vpc == "vpc-0123"
    assert glob.subnet_id == "subnet-0123"
    assert cfg.route_table_id == "rtb-0123"
    assert cfg.role_arn == "arn:aws:iam::123456789012:role/ccm"
    assert cfg.cluster_id == "prod"
    assert not cfg.uses_legacy_tags
    assert glob.disable_security_group_ingress is True
    assert glob.elb_security_group == "sg-0123"
    assert cfg.node_ip_families == ("ipv6", "ipv4")
    ((key, override),) = cfg.service_override.items()
    assert (key, override.boto_service, override.url, override.signing_region) == (
        "1",
        "ec2",
        "https://ec2.example.com",
        "us-west-2",
    )
    assert cfg.override_for("ec2", "us-west-2") is override
    assert cfg.override_for("ec2", "us-east-1") is None
    assert cfg.override_for("elb", "us-west-2") is None


@pytest.mark.parametrize(
    ("text", "families"),
    [
        pytest.param(b"[global]\nNodeIPFamilies = ipv6", ("ipv6",), id="Single IP family"),
        pytest.param(
            b"[global]\nNodeIPFamilies = ipv6\nNodeIPFamilies = ipv4",
            ("ipv6", "ipv4"),
            id="Multiple IP families",
        ),
        pytest.param(b"[Global]\nVPC = vpc-1", ("ipv4",), id="default ipv4"),
    ],
)
def test_node_ip_families(text: bytes, families: tuple[str, ...]) -> None:
    assert AWSConfig.parse(text).node_ip_families == families


def test_names_are_case_insensitive_and_values_may_be_quoted() -> None:
    cfg = AWSConfig.parse(b'[GLOBAL]\nvpc = " vpc-1 "\nkubernetesclustertag = legacy\n')
    assert cfg.global_.vpc == "vpc-1"
    assert cfg.cluster_id == "legacy"
    assert cfg.uses_legacy_tags


def test_a_value_less_boolean_is_true() -> None:
    assert AWSConfig.parse(
        b"[Global]\nDisableSecurityGroupIngress\n"
    ).global_.disable_security_group_ingress


def test_no_config_file_means_every_default() -> None:
    assert AWSConfig.parse(None) == AWSConfig()
    assert AWSConfig().node_ip_families == ("ipv4",)


def test_the_same_model_reads_yaml() -> None:
    cfg = AWSConfig.parse(b"global:\n  kubernetesClusterID: prod\n  nodeIPFamilies: [ipv6]\n")
    assert (cfg.cluster_id, cfg.node_ip_families) == ("prod", ("ipv6",))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            b"[Global]\nDisableSecurityGroupIngress = maybe\n",
            "cloud config: global_.disable_security_group_ingress: Input should be a valid "
            "boolean, unable to interpret input",
            id="bad boolean",
        ),
        pytest.param(
            b"[Global]\nNodeIPFamilies = ipv5\n",
            "cloud config: global_.node_ip_families[0]: Input should be 'ipv4' or 'ipv6'",
            id="bad family",
        ),
        pytest.param(
            b"[Global]\nZone = nowhere\n",
            "cloud config: global_.zone: invalid AZ: nowhere",
            id="bad zone",
        ),
        pytest.param(
            b"[Global]\nKubernetesClusterTag = a\nKubernetesClusterID = b\n",
            "cloud config: global_: KubernetesClusterTag 'a' and KubernetesClusterID 'b' name "
            "different clusters",
            id="cluster IDs disagree",
        ),
        pytest.param(
            b'[ServiceOverride "1"]\nService = ec2\nRegion = r\nSigningRegion = r\n',
            "cloud config: service_override.1.URL: Field required",
            id="override without URL",
        ),
        pytest.param(
            b'[ServiceOverride "1"]\nService = ec2\nRegion = r\nURL = http://x\nSigningRegion =\n',
            "cloud config: service_override.1.signing_region: String should have at least 1 "
            "character",
            id="override with an empty signing region",
        ),
        pytest.param(
            b'[ServiceOverride "1"]\nService = s3\nRegion = r\nURL = http://x\nSigningRegion = r\n',
            "cloud config: service_override.1.service: unknown service 's3'",
            id="override of an unknown service",
        ),
        pytest.param(
            b'[ServiceOverride "1"]\nService = ec2\nRegion = r\nURL = http://x\n'
            b"SigningRegion = r\n"
            b'[ServiceOverride "2"]\nService = EC2\nRegion = r\nURL = http://y\n'
            b"SigningRegion = r\n",
            "cloud config: service_override: [ServiceOverride '2']: duplicate override of EC2 in r",
            id="duplicate override",
        ),
    ],
)
def test_bad_config_is_one_line_naming_the_field(text: bytes, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AWSConfig.parse(text)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_a_repeated_scalar_takes_the_last_value_and_an_empty_one_clears_a_list() -> None:
    cfg = AWSConfig.parse(
        b"[Global]\nVPC = a\nVPC = b\nNodeIPFamilies = ipv6\nNodeIPFamilies\n"
        b"NodeIPFamilies = ipv4\n"
    )
    assert cfg.global_.vpc == "b"
    assert cfg.node_ip_families == ("ipv4",)


@pytest.mark.parametrize(
    ("az", "region"),
    [
        ("us-west-2a", "us-west-2"),
        ("us-west-2-lax-1a", "us-west-2"),
        ("ap-northeast-2a", "ap-northeast-2"),
        ("us-gov-east-1a", "us-gov-east-1"),
        ("us-iso-east-1a", "us-iso-east-1"),
        ("us-isob-east-1a", "us-isob-east-1"),
    ],
)
def test_az_to_region(az: str, region: str) -> None:
    assert az_to_region(az) == region


_NO_REGION = {"AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_CONFIG_FILE": "/nonexistent"}


def test_region_comes_from_zone_first_then_region_then_environment() -> None:
    with patched_environ({**_NO_REGION, "AWS_REGION": "eu-west-3"}):
        both = AWSConfig.parse(b"[Global]\nZone = us-west-2a\nRegion = eu-central-1\n")
        assert resolve_region(both) == "us-west-2"
        assert (
            resolve_region(AWSConfig.parse(b"[Global]\nRegion = eu-central-1\n")) == "eu-central-1"
        )
        assert resolve_region(AWSConfig()) == "eu-west-3"


class _FakeIMDS(http.server.BaseHTTPRequestHandler):
    """IMDSv2 on 127.0.0.1: a token, then the instance identity's region."""

    def do_PUT(self) -> None:
        self._answer(b"token")

    def do_GET(self) -> None:
        path = self.path.rstrip("/")
        if path.endswith("/placement/region"):
            self._answer(b"ap-south-2")
        elif path.endswith("/placement/availability-zone"):
            self._answer(b"ap-south-2a")
        else:
            self.send_error(404)

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_imds() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeIMDS)
    thread = threading.Thread(target=server.serve_forever, name="fake-imds", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_region_falls_back_to_instance_metadata(fake_imds: str) -> None:
    env = {**_NO_REGION, "AWS_EC2_METADATA_DISABLED": "false"}
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = fake_imds
    with patched_environ(env):
        assert resolve_region(AWSConfig()) == "ap-south-2"


def test_no_region_anywhere_is_a_config_error() -> None:
    with (
        patched_environ({**_NO_REGION, "AWS_EC2_METADATA_DISABLED": "true"}),
        pytest.raises(ConfigError, match=r"^cloud config: \[Global\] Region: no region"),
    ):
        resolve_region(AWSConfig())
