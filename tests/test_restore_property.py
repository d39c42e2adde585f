"""Property: whatever array a user hands ``Restorer.restore``, it either returns a frame of
that shape and dtype or raises GpmaskError, never anything else (no NaN frame, no white
frame from a 0-255 float, no numpy or ONNX Runtime exception)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpmask.errors import GpmaskError
from gpmask.runtime.frame_batch import FLOAT_RANGE_TOLERANCE
from tests.conftest import make_checkpoint

DTYPES = [np.uint8, np.float32, np.float64, np.float16, np.int16, np.int64, np.bool_,
          np.complex64]
#: Value ranges a float frame may come in: the right one, 0-255 as floats, slightly and
#: far outside, and with NaN or infinities mixed in.
FLOAT_RANGES = [(0.0, 1.0), (0.0, 255.0), (-1.0, 2.0), (1.0, 1.0 + FLOAT_RANGE_TOLERANCE / 2)]


@pytest.fixture(scope="module")
def restorer(tmp_path_factory: pytest.TempPathFactory):
    from gpmask.export import export_bundle
    from gpmask.runtime import Restorer

    root: Path = tmp_path_factory.mktemp("property") / "bundle"
    export_bundle(make_checkpoint(("rain", "snow")), root, verify=False, progress=False)
    with Restorer(root, backend="onnxruntime-cpu") as loaded:
        yield loaded


@st.composite
def frames(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.one_of(
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=9),
        st.tuples(st.integers(0, 9), st.integers(0, 9), st.sampled_from([1, 2, 3, 4, 5])),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    ))
    if dtype.kind == "f":
        low, high = (float(dtype.type(v)) for v in draw(st.sampled_from(FLOAT_RANGES)))
        elements = st.floats(low, high, width=min(dtype.itemsize * 8, 64))
        if draw(st.booleans()):
            elements = st.one_of(elements, st.sampled_from([np.nan, np.inf, -np.inf]))
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


@settings(max_examples=60, deadline=None)
@given(frame=frames(), weather=st.sampled_from(["rain", "snow", "common"]), bgr=st.booleans(),
       transposed=st.booleans())
def test_restore_returns_a_like_frame_or_refuses(restorer, frame, weather, bgr, transposed):
    if transposed and frame.ndim >= 2:
        frame = frame.swapaxes(0, 1)  # a non-contiguous view, as slicing or cv2 may give
    try:
        restored = restorer.restore(frame, weather, bgr=bgr)
    except GpmaskError:
        return
    assert restored.shape == frame.shape and restored.dtype == frame.dtype
    if frame.dtype.kind == "f":
        assert np.isfinite(restored).all()  # alpha is passed through, so the tolerance
        assert -FLOAT_RANGE_TOLERANCE <= restored.min() <= restored.max() <= 1 + \
            FLOAT_RANGE_TOLERANCE
