"""Extension points (upstream ``NewCloudControllerManagerCommand``): controllers and flags added by
an embedding program or contributed by a provider's factory, known to ``--controllers``, shown in
``--help`` and handed to the provider and the controllers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any

import pytest

from ccm.app import main, manager, options
from ccm.cloudprovider import (
    CloudProvider,
    Flag,
    FlagSet,
    init_cloud_provider,
    register,
    registry,
    unregister,
)
from ccm.errors import ConfigError


def _noop(ctx: manager.ControllerContext) -> manager.Runnable | str:
    return "not run in unit tests"


EXTRA = manager.ControllerSpec(
    name="acme-tagger", init=_noop, aliases=("tagger",), disabled_by_default=True
)
ALWAYS = manager.ControllerSpec(name="acme-audit", init=_noop)
SPECS = {**manager.default_controllers(), EXTRA.name: EXTRA, ALWAYS.name: ALWAYS}
CATALOG = options.ControllerCatalog.of(SPECS.values())

FLAGS = FlagSet(
    name="acme",
    flags=(
        Flag(name="--acme-tag-prefix", help="Prefix.", default=""),
        Flag(name="--acme-workers", help="Workers.", default=2, kind="int"),
        Flag(name="--acme-dry-run", help="Dry run.", default=False, kind="bool"),
        Flag(name="--acme-interval", help="Interval.", default=30.0, kind="duration"),
    ),
)


def enabled(controllers: list[str]) -> set[str]:
    return {n for n, on in options.enabled_controllers(controllers, CATALOG).items() if on}


def test_star_skips_an_added_controller_disabled_by_default_until_it_is_named() -> None:
    default = set(manager.default_controllers())
    assert enabled(["*"]) == default | {"acme-audit"}
    assert enabled(["*", "acme-tagger"]) == default | {"acme-audit", "acme-tagger"}
    assert enabled(["*", "tagger", "-acme-audit"]) == default | {"acme-tagger"}
    assert enabled(["*", "-route"]) == default - {"node-route-controller"} | {"acme-audit"}


def test_controllers_flag_accepts_added_names_and_aliases_and_still_refuses_unknown_ones() -> None:
    o = options.parse_args(
        ["--cloud-provider=fake", "--controllers=*,acme-tagger,-tagger"], controllers=CATALOG
    )
    assert o.controllers == ["*", "acme-tagger", "-tagger"]
    with pytest.raises(ConfigError, match='"acme-taggr" is not in the list'):
        options.parse_args(
            ["--cloud-provider=fake", "--controllers=acme-taggr"], controllers=CATALOG
        )
    with pytest.raises(ConfigError, match='"acme-tagger" is not in the list'):
        options.parse_args(["--cloud-provider=fake", "--controllers=acme-tagger"])


def test_added_flags_parse_with_go_syntax_and_keep_their_defaults() -> None:
    o = options.parse_args(["--cloud-provider=fake"], flag_sets=[FLAGS])
    assert o.extension_flags == {
        "acme-tag-prefix": "",
        "acme-workers": 2,
        "acme-dry-run": False,
        "acme-interval": 30.0,
    }
    o = options.parse_args(
        [
            "--cloud-provider=fake",
            "--acme-tag-prefix=tags.acme.example.com/",
            "--acme-workers",
            "5",
            "--acme-dry-run",
            "--acme-interval=1m30s",
        ],
        flag_sets=[FLAGS],
    )
    assert o.extension_flags == {
        "acme-tag-prefix": "tags.acme.example.com/",
        "acme-workers": 5,
        "acme-dry-run": True,
        "acme-interval": 90.0,
    }
    with pytest.raises(ConfigError, match="--acme-workers"):
        options.parse_args(["--cloud-provider=fake", "--acme-workers=many"], flag_sets=[FLAGS])
    with pytest.raises(ConfigError, match="--acme-tag-prefix"):
        options.parse_args(["--cloud-provider=fake", "--acme-tag-prefix=x"])  # not added


def test_help_shows_each_flag_set_under_its_name() -> None:
    text = options.build_parser(controllers=CATALOG, flag_sets=[FLAGS]).format_help()
    section = text[text.index("acme flags:") :]
    assert "--acme-tag-prefix STRING" in section and "--acme-dry-run [BOOL]" in section
    assert "Disabled by default: acme-tagger" in " ".join(text.split())


def test_flags_are_namespaced_and_never_shadow_ccms_own() -> None:
    with pytest.raises(ValueError, match="must be called --acme-<words>"):
        FlagSet(name="acme", flags=(Flag(name="--tag-prefix", help="x"),))
    with pytest.raises(ValueError, match="unknown kind"):
        Flag(name="--acme-x", help="x", kind="list")  # type: ignore[arg-type]
    clash = FlagSet(name="cloud", flags=(Flag(name="--cloud-provider", help="x"),))
    with pytest.raises(ConfigError, match="--cloud-provider of flag set 'cloud' is defined twice"):
        options.build_parser(flag_sets=[clash])


class Acme(CloudProvider):
    name = "acme"

    def __init__(self, flags: Mapping[str, Any] | None = None) -> None:
        self.flags = flags


def acme_factory(config: bytes | None, *, flags: Mapping[str, Any]) -> Acme:
    return Acme(flags)


acme_factory.flags = FLAGS.flags  # type: ignore[attr-defined]
acme_factory.controllers = (EXTRA,)  # type: ignore[attr-defined]


@pytest.fixture
def acme() -> Iterator[None]:
    register("acme", acme_factory)
    yield
    unregister("acme")


def test_a_provider_factory_contributes_flags_and_controllers(acme: None) -> None:
    flag_sets, specs = main.provider_extensions(["--cloud-provider", "acme"])
    assert flag_sets == [FLAGS]
    assert specs == [EXTRA]
    # named by the embedding program's defaults too
    flag_sets, _ = main.provider_extensions([], options.Options(cloud_provider="acme"))
    assert flag_sets == [FLAGS]


def test_an_entry_point_factory_contributes_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = metadata.EntryPoint(
        name="acme",
        value=f"{__name__}:acme_factory",
        group=registry.ENTRY_POINT_GROUP,
    )
    monkeypatch.setattr(registry, "_entry_points", lambda: {"acme": ep})
    flag_sets, specs = main.provider_extensions(["--cloud-provider=acme"])
    assert flag_sets == [FLAGS] and specs == [EXTRA]
    text = " ".join(
        options.build_parser(
            controllers=options.ControllerCatalog.of(
                [*manager.default_controllers().values(), *specs]
            ),
            flag_sets=flag_sets,
        )
        .format_help()
        .split()
    )
    assert "acme flags: --acme-tag-prefix STRING Prefix." in text


async def test_a_factory_declaring_flags_gets_their_values(acme: None) -> None:
    cloud = await init_cloud_provider("acme", None, flags={"acme-workers": 7})
    assert isinstance(cloud, Acme)
    assert cloud.flags == {"acme-workers": 7}


async def test_a_factory_without_flags_is_called_as_before() -> None:
    register("plain", lambda config: Acme())
    try:
        cloud = await init_cloud_provider("plain", None, flags={"x": 1})
    finally:
        unregister("plain")
    assert isinstance(cloud, Acme) and cloud.flags is None


def test_a_provider_that_cannot_load_fails_start_up_but_not_help() -> None:
    with pytest.raises(ConfigError, match='unknown cloud provider "nope"'):
        main.provider_extensions(["--cloud-provider=nope"])
    assert main.provider_extensions(["--cloud-provider=nope", "--help"]) == ([], [])
    assert main.provider_extensions(["--cloud-provider"]) == ([], [])  # the full parser reports


def test_bad_contributions_are_one_line_config_errors() -> None:
    def factory(config: bytes | None) -> Acme:
        return Acme()

    factory.controllers = ("not-a-spec",)  # type: ignore[attr-defined]
    register("bad", factory)
    try:
        with pytest.raises(ConfigError, match='cloud provider "bad": controllers must be'):
            main.provider_extensions(["--cloud-provider=bad"])
        factory.controllers = ()  # type: ignore[attr-defined]
        factory.flags = (Flag(name="--other-x", help="x"),)  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match="must be called --bad-<words>"):
            main.provider_extensions(["--cloud-provider=bad"])
    finally:
        unregister("bad")


def test_an_added_controller_may_not_take_a_name_or_alias_in_use() -> None:
    alias = manager.ControllerSpec(name="acme-x", init=_noop, aliases=("route",))
    with pytest.raises(ConfigError, match='alias "route" is taken'):
        main._merge_controllers(manager.default_controllers(), [alias])
    name = manager.ControllerSpec(name="service-lb-controller", init=_noop)
    with pytest.raises(ConfigError, match='name or alias "service-lb-controller" is taken'):
        main._merge_controllers(manager.default_controllers(), [name])


def test_run_refuses_an_unknown_controller_naming_the_added_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main.run(["--cloud-provider=fake", "--controllers=*,acme-taggr"], controllers=SPECS)
    assert code == 1
    err = capsys.readouterr().err
    assert '"acme-taggr" is not in the list of known controllers' in err
    assert "acme-tagger" in err and err.count("\n") == 1
