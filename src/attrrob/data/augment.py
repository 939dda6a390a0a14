"""Offline augmentation and histogram equalisation of uint8 NCHW image arrays (RAR's GTSRB/Flower recipe).

`transform_images` is a numpy port of RAR's `transform_image` (`GTSRB/generate_data.py`), applied
in that order to an image scaled to [0,1]:
1. rotation by U(−15°, 15°) about the image centre, bilinear, edge pixels extended
   (skimage `rotate(..., mode='edge')`);
2. translation by U(−2.5, 2.5) px in x and y, bilinear, zero outside (cv2 `warpAffine`, whose
   fixed-point 1/32-pixel sampling grid is replayed);
3. projective warp: the output corners come from the image corners moved by U(−d, d) each,
   d = size·0.3·U(0, 0.8), bilinear, edge mode (skimage `ProjectiveTransform` + `warp`);
then ×255 and truncation to uint8. The random draws (12 per image) come from a seeded numpy
Generator, so the result does not depend on how the work is chunked.
"""

from __future__ import annotations

import numpy as np

MAX_ANGLE_DEG = 15.0
MAX_TRANSLATION_PX = 5.0  # total span: shifts are U(−2.5, 2.5)
MAX_WARP = 0.8
WARP_FRACTION = 0.3
DRAWS_PER_IMAGE = 12
_PIXELS_PER_CHUNK = 1 << 16  # bounds the float64 temporaries (about 40 MB at 3 channels)


def draw_parameters(rng: np.random.Generator, count: int) -> np.ndarray:
    """Uniform [0,1) draws, one row of 12 per image: angle, tx, ty, d, then the 8 corner offsets."""
    return rng.random((count, DRAWS_PER_IMAGE))


def _bilinear(images: np.ndarray, xs: np.ndarray, ys: np.ndarray, border: str) -> np.ndarray:
    """Sample images [B,H,W,C] at (x=column, y=row) positions [B,h,w] → [B,h,w,C]; border 'edge' or 'zero'."""
    batch, height, width, channels = images.shape
    x0 = np.floor(xs)
    y0 = np.floor(ys)
    fx = (xs - x0)[..., None]
    fy = (ys - y0)[..., None]
    x0 = x0.astype(np.intp)
    y0 = y0.astype(np.intp)
    # Gathering rows of a flat [B·H·W, C] view with `take` is much faster than 3-D fancy indexing.
    flat = images.reshape(-1, channels)
    first_pixel = (np.arange(batch, dtype=np.intp) * (height * width))[:, None, None]
    out = np.zeros(xs.shape + (channels,), dtype=np.float64)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            xc, yc = np.clip(xi, 0, width - 1), np.clip(yi, 0, height - 1)
            values = flat.take(first_pixel + yc * width + xc, axis=0)
            if border == "zero":
                values *= ((xi >= 0) & (xi < width) & (yi >= 0) & (yi < height))[..., None]
            out += (wy * wx) * values
    return out


def _homographies(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[B,3,3] matrices mapping the 4 points source[b] onto target[b] (each [B,4,2]), h33 = 1."""
    batch = source.shape[0]
    a = np.zeros((batch, 8, 8))
    b = np.zeros((batch, 8))
    for k in range(4):
        x, y = source[:, k, 0], source[:, k, 1]
        u, v = target[:, k, 0], target[:, k, 1]
        a[:, 2 * k, 0], a[:, 2 * k, 1], a[:, 2 * k, 2] = x, y, 1.0
        a[:, 2 * k, 6], a[:, 2 * k, 7] = -x * u, -y * u
        a[:, 2 * k + 1, 3], a[:, 2 * k + 1, 4], a[:, 2 * k + 1, 5] = x, y, 1.0
        a[:, 2 * k + 1, 6], a[:, 2 * k + 1, 7] = -x * v, -y * v
        b[:, 2 * k], b[:, 2 * k + 1] = u, v
    h = np.linalg.solve(a, b[..., None])[..., 0]
    return np.concatenate([h, np.ones((batch, 1))], axis=1).reshape(batch, 3, 3)


def _transform_chunk(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """images float64 [B,H,W,C] in [0,1], params [B,12] → transformed float64 [B,H,W,C]."""
    batch, height, width, _ = images.shape
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                             indexing="ij")
    cols = np.broadcast_to(cols, (batch, height, width))
    rows = np.broadcast_to(rows, (batch, height, width))

    # 1. Rotation: output (x, y) reads input at centre + R(θ)·((x, y) − centre), as skimage does.
    theta = np.deg2rad(-MAX_ANGLE_DEG + 2 * MAX_ANGLE_DEG * params[:, 0])[:, None, None]
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = np.cos(theta), np.sin(theta)
    xs = cos * (cols - cx) - sin * (rows - cy) + cx
    ys = sin * (cols - cx) + cos * (rows - cy) + cy
    images = _bilinear(images, xs, ys, "edge")

    # 2. Translation: output (x, y) reads input at (x − tx, y − ty), zero outside. cv2 computes
    # that position in fixed point (1/1024 px, rounded to its 1/32-px interpolation grid), and RAR
    # passes the shift as float32: both are replayed so the result matches cv2.warpAffine.
    tx = (MAX_TRANSLATION_PX * params[:, 1] - MAX_TRANSLATION_PX / 2).astype(np.float32).astype(np.float64)
    ty = (MAX_TRANSLATION_PX * params[:, 2] - MAX_TRANSLATION_PX / 2).astype(np.float32).astype(np.float64)
    xs = np.floor((np.rint(-tx * 1024)[:, None, None] + 16 + cols * 1024) / 32) / 32
    ys = np.floor((np.rint((rows - ty[:, None, None]) * 1024) + 16) / 32) / 32
    images = _bilinear(images, xs, ys, "zero")

    # 3. Projective warp. RAR draws d from the height (its images are square).
    d = height * WARP_FRACTION * MAX_WARP * params[:, 3]
    off = -d[:, None] + 2 * d[:, None] * params[:, 4:12]
    tl_top, tl_left, bl_bottom, bl_left, tr_top, tr_right, br_bottom, br_right = off.T
    moved = np.stack([
        np.stack([tl_left, tl_top], axis=1),
        np.stack([bl_left, height - bl_bottom], axis=1),
        np.stack([width - br_right, height - br_bottom], axis=1),
        np.stack([width - tr_right, tr_top], axis=1),
    ], axis=1)
    corners = np.broadcast_to(np.array([[0, 0], [0, height], [width, height], [width, 0]], dtype=np.float64),
                              moved.shape)
    # skimage estimates moved → corners and uses it as the output → input map.
    h = _homographies(moved, corners)
    den = h[:, 2, 0, None, None] * cols + h[:, 2, 1, None, None] * rows + h[:, 2, 2, None, None]
    xs = (h[:, 0, 0, None, None] * cols + h[:, 0, 1, None, None] * rows + h[:, 0, 2, None, None]) / den
    ys = (h[:, 1, 0, None, None] * cols + h[:, 1, 1, None, None] * rows + h[:, 1, 2, None, None]) / den
    return _bilinear(images, xs, ys, "edge")


def transform_images(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Apply the RAR transform to uint8 NCHW images with one row of `draw_parameters` each → uint8 NCHW."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 [N,C,H,W] images, got {images.dtype} {images.shape}")
    if params.shape != (images.shape[0], DRAWS_PER_IMAGE):
        raise ValueError(f"expected parameters [{images.shape[0]}, {DRAWS_PER_IMAGE}], got {params.shape}")
    count, _, height, width = images.shape
    out = np.empty_like(images)
    chunk = max(1, _PIXELS_PER_CHUNK // (height * width))
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        batch = images[start:stop].transpose(0, 2, 3, 1).astype(np.float64) / 255.0
        result = _transform_chunk(batch, params[start:stop])
        # RAR: (output * 255).astype(uint8), i.e. truncation; bilinear sampling keeps [0,1].
        out[start:stop] = np.clip(result * 255.0, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return out


def augment_to_per_class(images: np.ndarray, labels: np.ndarray, per_class: int, seed: int):
    """Top every class up to `per_class` images: its originals, then transforms of originals[i % count].

    Classes come out in increasing label order (RAR's layout). A class that already has
    `per_class` images or more is kept unchanged; `per_class = 0` means no augmentation.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    groups = [np.flatnonzero(labels == c) for c in classes]
    sizes = [max(per_class, len(g)) for g in groups]
    out_x = np.empty((sum(sizes),) + images.shape[1:], dtype=np.uint8)
    out_y = np.empty(sum(sizes), dtype=np.int64)
    start = 0
    for c, group, size in zip(classes, groups, sizes):
        originals = images[group]
        out_x[start:start + len(group)] = originals
        extra = size - len(group)
        if extra:
            sources = originals[np.arange(extra) % len(group)]
            out_x[start + len(group):start + size] = transform_images(sources, draw_parameters(rng, extra))
        out_y[start:start + size] = c
        start += size
    return out_x, out_y


def equalize_hist(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Histogram-equalise every [H,W] plane of a uint8 array [..., H, W], as cv2.equalizeHist does.

    `out` may be `images` itself (in place: the 430,000-image GTSRB set need not be held twice).

    For a plane with lowest value m (count h_m) and cumulative histogram cdf, value v maps to
    round_half_even(float32(cdf(v) − h_m) · float32(255 / (H·W − h_m))); a constant plane is unchanged.
    """
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    shape = images.shape
    pixels = shape[-1] * shape[-2]
    planes = np.ascontiguousarray(images).reshape(-1, pixels)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
    result = out
    out = out.reshape(-1, pixels)
    chunk = max(1, (1 << 22) // pixels)
    for start in range(0, planes.shape[0], chunk):
        block = planes[start:start + chunk]
        count = block.shape[0]
        offsets = (np.arange(count, dtype=np.int64) * 256)[:, None]
        hist = np.bincount((block + offsets).ravel(), minlength=count * 256).reshape(count, 256)
        lowest = np.argmax(hist > 0, axis=1)
        low_count = hist[np.arange(count), lowest]
        cdf = np.cumsum(hist, axis=1)
        rest = pixels - low_count
        constant = rest == 0
        scale = np.float32(255.0) / np.maximum(rest, 1).astype(np.float32)
        lut = np.rint((cdf - low_count[:, None]).astype(np.float32) * scale[:, None])
        lut = np.clip(lut, 0, 255).astype(np.uint8)
        lut[constant] = np.arange(256, dtype=np.uint8)
        out[start:start + count] = np.take_along_axis(lut, block.astype(np.intp), axis=1)
    return result
