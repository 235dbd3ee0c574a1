"""DeepLense strong-lensing images: one ``.npy`` per image in a folder per class.

Layouts (``docs/datasets.md``)::

    dataset/train/{no,sphere,vort}/*.npy          common test set, (1, 150, 150) float64
    Model_I/{axion,cdm,no_sub}/*.npy              Model I–III sets, 150×150 (I) or 64×64 (II, III)

Point the reader at the folder whose sub-folders are the classes (``dataset/train``). Labels
follow the sorted class-folder names unless ``classes`` gives the order (the Model sets' convention
``axion, cdm, no_sub`` = 0, 1, 2 is also their sorted order). Images may be stored as ``(H, W)``,
``(1, H, W)`` or ``(H, W, 1)``.

Axion files of the Model sets are object arrays ``[image, axion_mass]``; reading them needs
unpickling, which can run arbitrary code. They load only with ``allow_pickle=True`` (CLI
``--allow-pickle``, config ``data.kwargs.allow_pickle: true``); every other file is read with
pickles refused, and a pickled file met without the opt-in raises an error saying how to opt in.
With the opt-in, the axion mass becomes the scalar feature ``axion_mass`` (NaN-free: 0 for files
without one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from e2evision.datasets.base import DatasetError, ImageDataset, check_finite
from e2evision.datasets.paths import PathArg, as_list
from e2evision.datasets.registry import Sniffer, register_reader
from e2evision.safety import refuse_duplicates, require_regular_file

PICKLE_HINT = (
    "it holds a pickled object array (the DeepLense axion format); unpickling can run "
    "arbitrary code, so it is refused by default. If you trust the file, pass "
    "allow_pickle=True (CLI: --allow-pickle; config: data.kwargs.allow_pickle: true)"
)


class DeepLenseFolder(ImageDataset):
    """Lensing images from ``ROOT/<class>/*.npy``, delivered as ``(N, 1, H, W)`` float32.

    Args:
        paths: one or more class-folder roots (their samples are concatenated).
        classes: class folder names in label order (default: sorted names found in the first root).
        allow_pickle: read object-array (axion) files; never set it for files you do not trust.
        image_size: expected (H, W); default: that of the first file.
    """

    format = "deeplense"
    task = "multiclass"

    def __init__(
        self,
        paths: PathArg,
        *,
        classes: Sequence[str] | None = None,
        allow_pickle: bool = False,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        self.allow_pickle = bool(allow_pickle)
        roots = [Path(p) for p in as_list(paths)]
        if not roots:
            raise ValueError("no DeepLense folders given")
        for root in roots:
            if not root.is_dir():
                raise DatasetError(root, "not a directory; DeepLense data is a folder with one sub-folder per class")
        refuse_duplicates(roots)
        found = sorted(d.name for d in roots[0].iterdir() if d.is_dir() and any(d.glob("*.npy")))
        self._classes = list(classes) if classes is not None else found
        if not self._classes:
            raise DatasetError(roots[0], "no class sub-folders holding .npy files")
        files, labels = [], []
        for root in roots:
            for k, name in enumerate(self._classes):
                folder = root / name
                if not folder.is_dir():
                    raise DatasetError(folder, f"class folder missing (classes: {self._classes})")
                members = [require_regular_file(q) for q in sorted(folder.glob("*.npy"))]
                if not members:
                    raise DatasetError(folder, "class folder holds no .npy files")
                files.extend(members)
                labels.extend([k] * len(members))
        self._roots = roots
        self._files = files
        self._labels = np.asarray(labels, dtype=np.float32)
        first, _ = self._load(0)
        self._image_size = tuple(image_size) if image_size else first.shape[-2:]
        if first.shape[-2:] != self._image_size:
            raise DatasetError(files[0], f"image shape {first.shape}, expected {self._image_size}")
        self.task = "binary" if len(self._classes) == 2 else "multiclass"

    # ----------------------------------------------------------------------------- interface
    @property
    def paths(self) -> list[Path]:
        return list(self._roots)

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    @property
    def n_samples(self) -> int:
        return len(self._files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, *self._image_size)

    @property
    def channel_names(self) -> list[str]:
        return ["intensity"]

    @property
    def class_names(self) -> list[str]:
        return list(self._classes)

    @property
    def scalar_names(self) -> list[str]:
        return ["axion_mass"] if self.allow_pickle else []

    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self.checked_indices(indices)
        out = np.empty((idx.size, *self.image_shape), dtype=np.float32)
        for j, i in enumerate(idx):
            out[j, 0] = self._load(int(i))[0]
        return out, self._labels[idx]

    def read_scalars(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = self.checked_indices(indices)
        if not self.allow_pickle:
            return np.zeros((idx.size, 0), dtype=np.float32)
        return np.array([[self._load(int(i))[1]] for i in idx], dtype=np.float32).reshape(-1, 1)

    # ----------------------------------------------------------------------------- internals
    def _load(self, i: int) -> tuple[np.ndarray, float]:
        """One image as (H, W) float32 and its axion mass (0 when the file has none)."""
        path = self._files[i]
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            if "allow_pickle" not in str(err):
                raise DatasetError(path, f"cannot read as .npy: {err}") from err
            if not self.allow_pickle:
                raise DatasetError(path, PICKLE_HINT) from None
            arr = np.load(path, allow_pickle=True)  # noqa: S301 - explicit, documented opt-in
        except (OSError, EOFError) as err:
            raise DatasetError(path, f"cannot read as .npy (truncated or not a .npy file): {err}") from err
        mass = 0.0
        if arr.dtype == object:
            try:
                image, mass = arr[0], float(arr[1])
            except (IndexError, TypeError, ValueError) as err:
                raise DatasetError(path, f"object array is not [image, axion_mass]: {err}") from err
            arr = np.asarray(image)
        if arr.dtype.kind not in "fiu":
            raise DatasetError(path, f"image dtype {arr.dtype}, expected a float array")
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        elif arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise DatasetError(path, f"image shape {arr.shape}, expected (H, W), (1, H, W) or (H, W, 1)")
        if hasattr(self, "_image_size") and arr.shape != self._image_size:
            raise DatasetError(path, f"image shape {arr.shape}, expected {self._image_size}")
        img = arr.astype(np.float32)
        check_finite(img[None], path, "image", np.array([i]))
        return img, mass


def looks_like_deeplense(path: Path) -> bool:
    """A directory whose sub-directories hold ``.npy`` files."""
    return path.is_dir() and any(d.is_dir() and any(d.glob("*.npy")) for d in path.iterdir())


register_reader(
    "deeplense",
    sniffer=Sniffer(
        lambda path: "deeplense" if looks_like_deeplense(path) else None,
        "class folders of .npy files",
        folder=True,
    ),
)(DeepLenseFolder)
