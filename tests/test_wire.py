"""The wire format: exact bytes, size caps, and downsampling that keeps sharp heads visible."""

from __future__ import annotations

import numpy as np
import pytest

from attn_widgets import _wire
from attn_widgets._wire import (
    MAX_MESSAGE_BYTES,
    maxpool2d,
    pack,
    payload_nbytes,
    quantize_u8,
    thumbnails,
    unpack,
)


def _stochastic(shape, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random(shape, dtype=np.float32) + 0.01
    return a / a.sum(-1, keepdims=True)


# -- pack / unpack ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype, tol", [("float32", 0), ("float16", 1e-3)])
def test_float_round_trip(dtype, tol):
    a = _stochastic((3, 7, 7))
    p = pack(a, dtype)
    assert p["dtype"] == dtype and p["shape"] == [3, 7, 7]
    assert isinstance(p["data"], bytes)
    assert len(p["data"]) == a.size * np.dtype(dtype).itemsize
    back = unpack(p)
    assert back.shape == a.shape and back.dtype == np.dtype(dtype)
    np.testing.assert_allclose(back.astype(np.float32), a, rtol=tol, atol=0)


def test_uint8_round_trip():
    q = np.arange(256, dtype=np.uint8).reshape(16, 16)
    p = pack(q, "uint8")
    assert p["data"] == bytes(range(256))
    np.testing.assert_array_equal(unpack(p), q)


@pytest.mark.parametrize("dtype", ["int32", "uint16"])
def test_integer_round_trip(dtype):
    a = np.array([[0, 1], [300, 65535]], dtype=dtype)
    np.testing.assert_array_equal(unpack(pack(a, dtype)), a)


@pytest.mark.parametrize(
    "dtype, value, expected",
    [
        ("float32", 1.0, b"\x00\x00\x80\x3f"),
        ("float32", -2.5, b"\x00\x00\x20\xc0"),
        ("float16", 1.0, b"\x00\x3c"),
        ("float16", 65504.0, b"\xff\x7b"),
        ("float16", 2.0**-24, b"\x01\x00"),  # smallest subnormal
        ("int32", 1, b"\x01\x00\x00\x00"),
        ("uint16", 0x1234, b"\x34\x12"),
    ],
)
def test_bytes_are_little_endian(dtype, value, expected):
    assert pack(np.array([value]), dtype)["data"] == expected


def test_big_endian_and_non_contiguous_inputs_are_normalised():
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    p = pack(a.T, "float32")  # transposed: Fortran-ordered, big-endian source
    assert p["shape"] == [4, 3]
    assert p["data"] == np.ascontiguousarray(a.T, dtype="<f4").tobytes()
    assert p["data"][:8] == b"\x00\x00\x00\x00\x00\x00\x80\x40"  # 0.0, then 4.0 (C order of a.T)
    np.testing.assert_array_equal(unpack(p), a.T)


def test_float64_is_narrowed_and_shape_is_plain_ints():
    p = pack(np.ones((2, 3), dtype=np.float64), "float32")
    assert len(p["data"]) == 24
    assert all(type(s) is int for s in p["shape"])


def test_unpack_accepts_memoryview_and_bytearray():
    a = np.array([0.25, 0.5], dtype=np.float32)
    p = pack(a, "float32")
    for data in (memoryview(p["data"]), bytearray(p["data"])):
        np.testing.assert_array_equal(unpack({**p, "data": data}), a)


def test_pack_rejects_unknown_dtype():
    with pytest.raises(ValueError, match=r"dtype: expected one of .*received 'float64'"):
        pack(np.zeros(2), "float64")


def test_pack_uint8_needs_quantised_input():
    with pytest.raises(TypeError, match=r"uint8 wire dtype needs a uint8 array \(quantise first\), received float32"):
        pack(np.zeros(2, dtype=np.float32), "uint8")


def test_unpack_rejects_bad_messages():
    with pytest.raises(ValueError, match=r"dtype: expected one of"):
        unpack({"dtype": "object", "shape": [1], "data": b"\x00"})
    with pytest.raises(ValueError, match=r"data: 3 values do not fill shape \(2, 2\)"):
        unpack({"dtype": "uint8", "shape": [2, 2], "data": b"\x00\x01\x02"})


def test_size_cap_error_names_size_shape_and_remedy():
    t = int(np.ceil(np.sqrt(MAX_MESSAGE_BYTES / 2))) + 1  # float16 T x T just over the cap
    a = np.zeros((t, t), dtype=np.float16)
    with pytest.raises(ValueError) as exc:
        pack(a, "float16")
    msg = str(exc.value)
    assert f"of shape ({t}, {t})" in msg
    assert f"{a.nbytes / 1e6:.1f} MB" in msg
    assert "per-message cap" in msg and "send it in tiles" in msg
    # Just under the cap is fine.
    ok = np.zeros(MAX_MESSAGE_BYTES // 2, dtype=np.float16)
    assert len(pack(ok, "float16")["data"]) == MAX_MESSAGE_BYTES


def test_cap_is_below_the_jupyter_server_limit():
    assert MAX_MESSAGE_BYTES < 10 * 1024 * 1024


def test_payload_nbytes_counts_nested_binary_only():
    state = {"a": b"1234", "b": [bytearray(3), {"c": memoryview(np.zeros(5, np.float32))}], "d": "text", "e": 7}
    assert payload_nbytes(state) == 4 + 3 + 20


# -- maxpool2d -------------------------------------------------------------------------


def test_maxpool_keeps_a_single_sharp_spike():
    t = 512
    a = np.full((t, t), 1e-6, dtype=np.float32)
    a[300, 17] = 0.9
    p = maxpool2d(a, 48)
    k = int(np.ceil(t / 48))
    assert p.shape == (int(np.ceil(t / k)),) * 2
    assert p.max() == pytest.approx(0.9)
    assert p[300 // k, 17 // k] == pytest.approx(0.9)
    assert np.count_nonzero(p > 1e-3) == 1
    # A mean pool would have washed it out.
    assert a[: k * (t // k), : k * (t // k)].reshape(t // k, k, t // k, k).mean((1, 3)).max() < 0.01


def test_maxpool_equals_blockwise_max():
    a = np.random.default_rng(1).random((2, 3, 12, 12)).astype(np.float32)
    p = maxpool2d(a, 4)
    assert p.shape == (2, 3, 4, 4)
    for i in range(4):
        for j in range(4):
            np.testing.assert_array_equal(p[..., i, j], a[..., 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].max(axis=(-2, -1)))


@pytest.mark.parametrize("t, size", [(7, 3), (13, 4), (5, 2), (97, 48), (49, 48), (512, 48), (100, 1)])
def test_maxpool_odd_sizes_stay_within_size_and_lose_no_maximum(t, size):
    a = np.random.default_rng(t).random((2, t, t)).astype(np.float32)
    p = maxpool2d(a, size)
    assert p.shape[:-2] == (2,) and p.shape[-1] == p.shape[-2] <= size
    k = int(np.ceil(t / size))
    assert p.shape[-1] == int(np.ceil(t / k))
    # The padded last block still holds the true max of the last rows/columns.
    np.testing.assert_array_equal(p[:, -1, -1], a[:, (p.shape[-1] - 1) * k :, (p.shape[-1] - 1) * k :].max(axis=(-2, -1)))
    np.testing.assert_array_equal(p.max(axis=(-2, -1)), a.max(axis=(-2, -1)))


def test_maxpool_small_input_is_unchanged():
    a = np.random.default_rng(0).random((4, 4))
    assert maxpool2d(a, 4) is a or np.array_equal(maxpool2d(a, 4), a)
    np.testing.assert_array_equal(maxpool2d(a, 100), a)


def test_maxpool_rejects_non_square_and_bad_size():
    with pytest.raises(ValueError, match=r"expected square last two axes, received shape \(2, 5, 6\)"):
        maxpool2d(np.zeros((2, 5, 6)), 3)
    with pytest.raises(ValueError, match=r"size: expected >= 1, received 0"):
        maxpool2d(np.zeros((4, 4)), 0)


# -- quantize_u8 -----------------------------------------------------------------------


def test_quantize_scales_each_slice_by_its_own_max():
    a = np.zeros((2, 2, 3, 3), dtype=np.float32)
    a[0, 0] = 0.5
    a[0, 0, 1, 1] = 1.0
    a[0, 1, 0, 0] = 0.01  # a weak head still uses the full 0..255 range
    a[1, 0] = np.linspace(0, 0.2, 9).reshape(3, 3)
    # a[1, 1] stays all zero
    q, scales = quantize_u8(a)
    assert q.dtype == np.uint8 and q.shape == a.shape
    assert scales.dtype == np.float32 and scales.shape == (2, 2)
    np.testing.assert_allclose(scales, [[1.0, 0.01], [0.2, 0.0]], rtol=1e-6)
    assert q[0, 0, 1, 1] == 255 and q[0, 0, 0, 0] == 128
    assert q[0, 1, 0, 0] == 255 and q[0, 1].sum() == 255
    assert q[1, 0].max() == 255 and q[1, 0, 0, 0] == 0
    assert not q[1, 1].any()
    # Reconstruction: value ~= q / 255 * scale, within half a step of each slice's scale.
    recon = q / 255.0 * scales[..., None, None]
    assert np.all(np.abs(recon - a) <= scales[..., None, None] / 255 / 2 + 1e-7)


def test_quantize_clips_negative_values_and_honours_axes():
    q, s = quantize_u8(np.array([[-1.0, 0.5, 1.0], [2.0, 1.0, 0.0]]), axes=(-1,))
    np.testing.assert_array_equal(q, [[0, 128, 255], [255, 128, 0]])
    np.testing.assert_array_equal(s, [1.0, 2.0])


# -- thumbnails ------------------------------------------------------------------------


def test_thumbnails_t512_6x12_heads_fit_the_budget():
    a = _stochastic((6, 12, 512, 512), seed=3)
    a[2, 5] = 0.0
    a[2, 5, :, 0] = 1.0  # one "attend to first token" head: a sharp vertical line
    th = thumbnails(a, 48)
    maps, scales = th["maps"], th["scales"]
    k = int(np.ceil(512 / 48))
    s = int(np.ceil(512 / k))
    assert maps["dtype"] == "uint8" and maps["shape"] == [6, 12, s, s] and s <= 48
    assert scales["dtype"] == "float32" and scales["shape"] == [6, 12]
    total = payload_nbytes(th)
    assert total == 6 * 12 * s * s + 6 * 12 * 4
    assert total < 1_000_000
    q = unpack(maps)
    np.testing.assert_allclose(unpack(scales), a.max(axis=(-2, -1)), rtol=1e-6)
    # The sharp head: full column at 255, nothing elsewhere.
    assert (q[2, 5, :, 0] == 255).all() and not q[2, 5, :, 1:].any()
    # Every head uses its full range.
    assert (q.max(axis=(-2, -1)) == 255).all()


def test_thumbnails_of_a_short_sequence_are_not_upsampled():
    a = _stochastic((2, 3, 5, 5))
    th = thumbnails(a, 48)
    assert th["maps"]["shape"] == [2, 3, 5, 5]
    q = unpack(th["maps"])
    np.testing.assert_array_equal(q, quantize_u8(a)[0])


def test_wire_module_exports():
    assert set(_wire.__all__) >= {"pack", "unpack", "maxpool2d", "thumbnails", "quantize_u8", "MAX_MESSAGE_BYTES"}


def test_packed_array_is_the_one_encoding_of_traits_and_buffers(monkeypatch):
    from attn_widgets import _wire
    from attn_widgets._wire import PackedArray

    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    p = PackedArray.of(a, "float16")
    assert p.header() == {"dtype": "float16", "shape": [2, 3]}
    assert p.data == a.astype("<f2").tobytes()  # little-endian, C order
    assert p.trait() == pack(a, "float16")
    np.testing.assert_array_equal(p.decode(), a.astype(np.float16))
    np.testing.assert_array_equal(PackedArray.of(a.T, "float32").decode(), a.T)  # non-contiguous input
    monkeypatch.setattr(_wire, "MAX_MESSAGE_BYTES", 11)
    with pytest.raises(ValueError, match=r"arr: 0.0 MB of shape \(2, 3\) exceeds"):
        PackedArray.of(a, "float16")  # 12 bytes: the cap is enforced inside, not at call sites
