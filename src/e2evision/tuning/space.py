"""The search space a config declares under ``tune:``.

Its schema is part of the experiment config (:mod:`e2evision.config`), validated with the rest of
it; it is re-exported here, where the search reads it.
"""

from e2evision.config import ParamSpec, TuneConfig

__all__ = ["ParamSpec", "TuneConfig"]
