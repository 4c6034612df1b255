"""The provider's ``--cloud-config`` file, a :class:`ccm.cloudprovider.config.ProviderConfig`::

    endpoint: http://127.0.0.1:8780    # the private cloud API (required)
    region: region-1                   # reported for machines that have no region of their own
    clusterName: ""                    # overrides --cluster-name for load balancers and routes
    credentials:
      tokenFile: /etc/ccm/token        # a file holding the bearer token sent to the API, or
      token: env:PRIVATE_CLOUD_TOKEN   # the token itself, "file:PATH" or "env:VARIABLE"
    timeouts:
      request: 10s                     # one HTTP request
      connect: 5s                      # connecting
    retries:
      attempts: 4                      # tries of one call on 5xx / connection errors (>= 1)
      initialBackoff: 200ms            # doubled each try (with jitter)
      maxBackoff: 2s                   # the backoff's ceiling

Durations are Go duration strings (``10s``, ``500ms``, ``1m30s``) or numbers of seconds. The same
settings may be given as JSON, or as INI (``[Global]`` / ``Endpoint = …``, ``[Timeouts]`` /
``Request = 10s``). Errors name the file and the field: ``/etc/ccm/cloud.yaml: retries.attempts:
Input should be greater than or equal to 1``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, field_validator

from ccm.cloudprovider.config import Duration, ProviderConfig, Secret, resolve_secret
from ccm.errors import ConfigError

__all__ = ["Credentials", "PrivateCloudConfig", "Retries", "Timeouts"]

PositiveDuration = Annotated[Duration, Field(gt=0)]


def _token_file(path: object) -> object:
    return resolve_secret(f"file:{path}") if isinstance(path, str) and path else None


class Credentials(ProviderConfig):
    token_file: Annotated[SecretStr | None, BeforeValidator(_token_file)] = None
    token: Secret | None = None


class Timeouts(ProviderConfig):
    request: PositiveDuration = 10.0
    connect: PositiveDuration = 5.0


class Retries(ProviderConfig):
    attempts: Annotated[int, Field(ge=1)] = 4
    initial_backoff: PositiveDuration = 0.2
    max_backoff: PositiveDuration = 2.0


class PrivateCloudConfig(ProviderConfig):
    ini_root_section = "Global"  # INI: [Global] Endpoint = …, Region = …

    endpoint: str
    region: str = ""
    cluster_name: str = ""
    credentials: Credentials = Credentials()
    timeouts: Timeouts = Timeouts()
    retries: Retries = Retries()

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @property
    def token(self) -> str | None:
        """The bearer token: ``credentials.token``, else the content of ``tokenFile``."""
        secret = self.credentials.token or self.credentials.token_file
        return secret.get_secret_value() if secret is not None else None

    @classmethod
    def parse(cls, data: bytes | None) -> PrivateCloudConfig:
        """Parse the bytes of ``--cloud-config``; raise ConfigError (one line) when invalid."""
        if not data:
            raise ConfigError("the private-cloud provider needs --cloud-config (endpoint: URL)")
        return cls.load(data)
