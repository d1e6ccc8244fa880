"""The provider registry: one line per provider; a provider module is imported only when used.

Each line maps a provider name to its target config model (in :mod:`janitor.targets`, so a
configuration validates without importing the provider), the ``"module:Class"`` of its
implementation, and the optional extra its vendor code needs (``pip install 'janitor[oci]'``)
or None. Adding a provider means one file in this package, one line in :data:`PROVIDERS`, a
config model in ``janitor/targets.py``, a fake server in ``tests/fakes/`` and a page in
``docs/`` (see docs/adding-a-provider.md).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, NamedTuple, cast

from janitor.errors import ConfigError, UnknownProvider
from janitor.targets import (
    AidpConfig,
    EssConfig,
    FabricSqlConfig,
    GlueConfig,
    JupyterConfig,
    TargetConfig,
)

if TYPE_CHECKING:
    from janitor.model import Action
    from janitor.providers.base import ProviderFactory


class Entry(NamedTuple):
    """One registered provider."""

    config: type[TargetConfig]
    factory: str  # "module:Class"
    extra: str | None  # the optional extra it needs, a key of EXTRAS


PROVIDERS: Final[Mapping[str, Entry]] = {
    "jupyter": Entry(JupyterConfig, "janitor.providers.jupyter:JupyterProvider", None),
    "aidp": Entry(AidpConfig, "janitor.providers.aidp:AidpProvider", "oci"),
    "ess": Entry(EssConfig, "janitor.providers.ess:EssProvider", None),
    "glue": Entry(GlueConfig, "janitor.providers.glue:GlueProvider", "aws"),
    "fabric_sql": Entry(FabricSqlConfig, "janitor.providers.fabric_sql:FabricSqlProvider", None),
}

#: optional extra -> the top-level module it installs, looked up with importlib's find_spec
#: (tests point an extra at a module that is, or is not, installed).
EXTRAS: Final[Mapping[str, str]] = {"oci": "oci", "aws": "botocore"}


def entry(name: str) -> Entry:
    """The registry line of provider ``name``.

    Raises:
        UnknownProvider: ``name`` is not registered.
    """
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(name, known=sorted(PROVIDERS)) from None


def config_model(name: str) -> type[TargetConfig]:
    """The pydantic model that validates a target of provider ``name`` (no provider import)."""
    return entry(name).config


def require_extra(name: str, *, target: str | None = None) -> None:
    """Check that the optional extra provider ``name`` needs is installed.

    Raises:
        UnknownProvider: ``name`` is not registered.
        ConfigError: the extra is missing; the message names it and how to install it.
    """
    extra = entry(name).extra
    if extra is None or _installed(EXTRAS[extra]):
        return
    where = f"target {target}: " if target else ""
    raise ConfigError(
        f"{where}provider {name} needs the optional extra janitor[{extra}]: "
        f"pip install 'janitor[{extra}]'"
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def load_provider(name: str) -> ProviderFactory:
    """The provider class registered under ``name``, imported now.

    Raises:
        UnknownProvider: ``name`` is not registered.
        ConfigError: its optional extra is missing, or its module is not part of this
            version of janitor.
    """
    require_extra(name)
    module_name, _, attr = entry(name).factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigError(
            f"provider {name} is not available in this version of janitor "
            f"(module {module_name} does not exist)"
        ) from None
    return cast("ProviderFactory", getattr(module, attr))


def provider_actions(name: str) -> frozenset[Action]:
    """The actions provider ``name`` can perform."""
    return load_provider(name).actions
