"""What `Model.predict`, `scores` and `evaluate` take, made into the one numpy array the engine reads.

Images come as PyTorch users hold them: numpy arrays of any integer or float dtype, torch tensors (on the CPU,
through `.numpy()`, without importing torch), anything that speaks DLPack or `__array__`, PIL images, or nested
lists; one `[28, 28]` image or a batch `[N, 28, 28]`, `[N, 1, 28, 28]` or `[N, 28, 28, 1]`. Integers are grey
levels 0-255; floats are in [0, 1], as torchvision's `ToTensor` gives them, unless `scale` says what they are
out of (`scale=255` for floats that were never divided).
"""

import numpy as np

SIDE = 28


def to_numpy(x):
    """`x` as a numpy array, converting what a PyTorch user holds without importing anything."""
    if isinstance(x, np.ndarray):
        return x
    # A torch tensor: detached from its graph, on the CPU (a copy only if it lives elsewhere).
    if all(hasattr(x, name) for name in ("detach", "cpu", "numpy")):
        return x.detach().cpu().numpy()
    # A PIL image: its grey levels.
    if all(hasattr(x, name) for name in ("convert", "mode", "size")):
        return np.asarray(x.convert("L"))
    if isinstance(x, (list, tuple)) and x and not np.isscalar(x[0]):
        return np.stack([to_numpy(item) for item in x])
    if hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
        return np.from_dlpack(x)
    return np.asarray(x)


def _numbers(name, a):
    if a.dtype == np.bool_ or a.dtype.kind not in "uif":
        raise TypeError(f"{name}: expected grey levels (integers 0-255, or floats in [0, 1]), got dtype {a.dtype}")


def _scaled(name, a, scale):
    """Grey levels as uint8, or floats in [0, 1] (float32 or float64), checked."""
    if scale is not None:
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: expected a positive number (255 for pixels 0-255), got {scale}")
        # In float32, as ToTensor divides: integers scaled by 255 give the bits of uint8 images.
        return a.astype(np.float32) / np.float32(scale)
    if a.size == 0:
        return a.astype(np.float32)
    if a.dtype.kind in "ui":
        low, high = a.min(), a.max()
        if low < 0 or high > 255:
            raise ValueError(f"{name}: integer pixels are grey levels 0-255, got values from {low} to {high}")
        return a.astype(np.uint8, copy=False)
    a = a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)
    high = np.nanmax(a) if np.isfinite(a).any() else 0.0
    if high > 1:
        raise ValueError(
            f"{name}: float pixels go up to {high:g}, but are expected in [0, 1] as ToTensor gives them: "
            f"divide by 255 (images / 255), or pass scale=255"
        )
    return a


def as_images(images, scale=None, name="images"):
    """`images` as `[N, 28, 28]` or `[N, 1, 28, 28]`: uint8 grey levels or floats in [0, 1]."""
    a = to_numpy(images)
    _numbers(name, a)
    if a.shape == (SIDE, SIDE):
        a = a[None]
    elif a.ndim == 4 and a.shape[1:] == (SIDE, SIDE, 1):
        a = a[..., 0]
    return _scaled(name, a, scale)


def as_pictures(pictures, scale=None, name="images"):
    """`pictures` (one, or a sequence) as a list of 2-D grey arrays of any size, for a `preprocess`."""
    if isinstance(pictures, np.ndarray) and pictures.ndim == 3:
        items = list(pictures)
    elif isinstance(pictures, (list, tuple)):
        items = list(pictures)
    else:
        items = [pictures]
    arrays = []
    for i, item in enumerate(items):
        a = to_numpy(item)
        _numbers(f"{name}: picture {i}", a)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        arrays.append(_scaled(f"{name}: picture {i}", a, scale))
    return arrays


def as_labels(labels, n):
    """`labels` as N int64 classes."""
    a = to_numpy(labels)
    if a.dtype.kind not in "ui" and not (a.dtype.kind == "f" and np.array_equal(a, np.round(a))):
        raise TypeError(f"labels: expected integer classes, got dtype {a.dtype}")
    return a.astype(np.int64).reshape(-1) if a.size == n else a.astype(np.int64)
