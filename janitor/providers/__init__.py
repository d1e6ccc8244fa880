"""The provider registry: one line per provider, imported only when a target uses it.

Adding a provider means one file in this package, one line in :data:`PROVIDERS`, a fake
server in ``tests/fakes/`` and a page in ``docs/`` (see docs/adding-a-provider.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Final, cast

from janitor.errors import UnknownProvider
from janitor.model import Action
from janitor.providers.base import ProviderFactory
from janitor.settings import TargetConfig

#: provider name -> "module:Class"
PROVIDERS: Final[Mapping[str, str]] = {
    "jupyter": "janitor.providers.jupyter:JupyterProvider",
}


def load_provider(name: str) -> ProviderFactory:
    """The provider class registered under ``name``.

    Raises:
        UnknownProvider: ``name`` is not registered.
    """
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(name, known=sorted(PROVIDERS)) from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return cast(ProviderFactory, getattr(module, attr))


def config_model(name: str) -> type[TargetConfig]:
    """The pydantic model that validates a target of provider ``name``."""
    return load_provider(name).config_model


def provider_actions(name: str) -> frozenset[Action]:
    """The actions provider ``name`` can perform."""
    return load_provider(name).actions
