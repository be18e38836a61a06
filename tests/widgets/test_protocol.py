"""The protocol module is the one list of messages: every handler a panel registers is in
it, and every reply goes through one framing (id echoed, one error shape)."""

from __future__ import annotations

import numpy as np

from attn_widgets import AttentionFlow, AttentionHeatmap, AttentionMatrix
from attn_widgets.trace import AttentionTrace
from attn_widgets.widgets import protocol


def _trace(n=5):
    rng = np.random.default_rng(0)
    a = rng.random((2, 2, n, n)).astype(np.float32)
    return AttentionTrace.from_tensors(a / a.sum(-1, keepdims=True), [f"t{i}" for i in range(n)])


def test_every_registered_request_is_in_the_protocol_table():
    tr = _trace()
    names = set()
    for w in (AttentionHeatmap(tr), AttentionMatrix(tr), AttentionFlow(tr)):
        names |= set(w._handlers)
        w.close()
    assert names <= set(protocol.REQUESTS), names - set(protocol.REQUESTS)
    for name in names:
        assert f"``{name}``" in protocol.__doc__  # and documented in the table


def test_dispatch_echoes_the_id_and_has_one_error_shape():
    sent = []

    def send(content, buffers=None):
        sent.append((content, buffers))

    def ok(content):
        return protocol.reply("pong", [b"\x01\x02"], n=content["n"])

    def boom(content):
        raise KeyError("x")

    handlers = {"ping": ok, "boom": boom}
    protocol.dispatch(handlers, {"type": "ping", "id": "a", "n": 3}, send)
    assert sent[-1] == ({"type": "pong", "n": 3, "id": "a"}, [b"\x01\x02"])
    protocol.dispatch(handlers, {"type": "boom", "id": "b"}, send)
    assert sent[-1] == ({"type": "error", "id": "b", "message": "KeyError: 'x'"}, None)
    protocol.dispatch(handlers, {"type": "nope", "id": 4}, send)
    assert sent[-1] == ({"type": "error", "id": 4, "message": "unknown request 'nope'"}, None)
    n = len(sent)
    protocol.dispatch(handlers, ["not", "a", "dict"], send)
    assert len(sent) == n  # not a request: ignored, never an exception


def test_thumbs_chunk_frames_one_layer():
    q = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    sc = np.array([0.5, 2.0], np.float32)
    content, buffers = protocol.thumbs_chunk(4, q, sc)
    assert content == {"type": "thumbs_chunk", "layer0": 4, "layer1": 5, "shape": [1, 2, 3, 3]}
    assert buffers == [q.tobytes(), sc.astype("<f4").tobytes()]
