"""Which planner answers: the LLM when one is configured, else the embedded offline planner.

Configuration is composed here, at the entry point (Style 5): configs/llm.yaml plus the ``TESSERA_LLM_*``
variables and the key variable. "Configured" means a model and an endpoint (a base URL, or a key for
OpenAI's own) are set; anything less falls back to the offline planner, with a warning when the setup looks
half done, so a machine with no network and no key always has a planner.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from tessera.agents.planner.base import Planner
from tessera.agents.planner.llm import LLMPlanner, llm_configured, load_llm_settings, resolve_api_key

log = logging.getLogger(__name__)

Backend = Literal["auto", "llm", "offline"]


def make_planner(*, backend: Backend = "auto", config: str | Path | None = None) -> Planner:
    """The planner to use.

    Args:
        backend: ``auto`` (the LLM when configured, else offline), ``llm`` (the LLM or an error saying what is
            missing) or ``offline``.
        config: an LLM config file instead of configs/llm.yaml.

    Raises:
        InputError: ``backend="llm"`` without a model or endpoint, or an unusable LLM config.
    """
    if backend == "offline":
        return _offline()
    settings = load_llm_settings(config)
    api_key = resolve_api_key(settings)
    if backend == "llm" or llm_configured(settings, api_key):
        return LLMPlanner(settings=settings, api_key=api_key)
    if settings.model or settings.base_url:
        missing = "an endpoint (TESSERA_LLM_BASE_URL or an API key)" if settings.model else \
            "a model (TESSERA_LLM_MODEL)"
        log.warning("LLM planner half configured (no %s); using the offline planner", missing)
    return _offline()


def _offline() -> Planner:
    # Imported here: the offline rules load only when they answer (and the LLM path never needs them).
    from tessera.agents.planner.offline import OfflinePlanner

    return OfflinePlanner()
