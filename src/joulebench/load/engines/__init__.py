"""Real engines launched and measured end to end (``joulebench load --launch/--engine``).

- :mod:`.process`: start a command in its own process group, wait until it serves, stop it;
- :mod:`.presets`: the usual command line of vLLM, TGI, SGLang, trtllm-serve, llama.cpp,
  ``transformers serve`` and ``joulebench serve``;
- :mod:`.scrape`: the engine's ``/metrics`` at 1 Hz (batch occupancy beside power);
- :mod:`.server_energy`: the energy the engine reports about itself against the meter;
- :mod:`.session`: the four together around one load.
"""

from joulebench.load.engines.presets import PRESETS, LaunchSpec, engine_command
from joulebench.load.engines.process import EngineNotReady, EngineProcess, launched
from joulebench.load.engines.session import LaunchOptions, engine_session, plan

__all__ = [
    "PRESETS",
    "EngineNotReady",
    "EngineProcess",
    "LaunchOptions",
    "LaunchSpec",
    "engine_command",
    "engine_session",
    "launched",
    "plan",
]
