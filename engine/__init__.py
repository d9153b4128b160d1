"""PolypForge engine: everything that is not UI.

The engine imports no Qt, and its inference path (bundle, runtime, text, schedulers, masks, pipelines)
imports no torch; torch, diffusers and optimum are used only under ``engine.export``.
"""

__version__ = "0.1.0"
