"""Optional dependencies: an ImportError that names the extra to install.

``pip install e2evision`` leaves out the simulators, ONNX and Optuna; the bare ``No module named
'optuna'`` does not tell a user which extra brings them, this does.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from e2evision.errors import MissingDependencyError

#: extra -> what it is for, as the message words it
EXTRAS = {
    "export": "ONNX export",
    "tune": "Hyper-parameter search (`e2evision tune`)",
    "root": "ROOT output",
    "sim": "The jet and lensing simulators",
}


MissingExtraError = MissingDependencyError
"""An optional dependency is not installed; the message says which extra provides it (the old name)."""


def missing_extra(what: str, extra: str, err: BaseException | None = None) -> MissingExtraError:
    """The error to raise when ``what`` needs ``extra`` and an import failed with ``err``."""
    cause = f" ({err})" if err is not None else ""
    return MissingExtraError(f"{what} needs `pip install 'e2evision[{extra}]'`{cause}")


def require(module: str, extra: str, what: str | None = None) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_extra(what or EXTRAS[extra], extra, err) from None
