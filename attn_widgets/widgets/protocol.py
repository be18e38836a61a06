"""Every message between the kernel and the views, in one place.

The views (``js/``) and the widgets talk over the widget comm in two ways: **synced
traits** (state; see each widget) and **custom messages** (requests, replies, pushes),
listed here. The JS side of this table is ``js/lib/protocol.js``; the fixtures in
``tests/contract`` pin both sides to it.

Framing: a request is ``{"type": <name>, "id": <string>, ...fields}``; its reply carries
the same ``id`` (``None`` for pushes) and either the reply type below or an error.
Arrays ride in binary buffers: the JSON holds ``dtype`` and ``shape``, the buffer the
little-endian C-order bytes (:class:`~attn_widgets._wire.PackedArray`); no message is
over :data:`~attn_widgets._wire.MAX_MESSAGE_BYTES`.

========================  =========  ===================================  ===========================================
message                   direction  fields                               reply / buffers
========================  =========  ===================================  ===========================================
``get_map``               view->k    layer, head                          ``map``: layer, head, dtype, shape, [step];
                                                                          1 buffer float16 ``[T, Tk]`` (or pooled
                                                                          ``step`` x ``step``)
``get_tile``              view->k    layer, head, r0, r1, c0, c1          ``tile``: layer, head, r0, r1, c0, c1, step,
                                                                          dtype, shape; 1 buffer float16
``get_thumbs``            view->k    (none; matrix of a LazyTrace only)   ``thumbs``: shape ``[L, H, s, s]``, note;
                                                                          3 buffers: uint8 maps, float32 ``[L, H]``
                                                                          scales, uint8 ``[L, H]`` pending mask
``get_svg``               view->k    (none; every panel)                  ``svg``: bytes; 1 buffer, UTF-8 SVG
``map`` (push)            k->view    layer, head, dtype, shape,           (no reply) sent before a selection change
                                     push=True, id=None, seq              made from Python; 1 buffer float16; at
                                                                          most one unacknowledged per panel
``map_ack`` (notice)      view->k    seq (of the push; null: view start)  no reply; lets the kernel push the newest
                                                                          selection's map (backpressure)
``thumbs_chunk``          k->view    layer0, layer1, shape                (no reply) exact thumbnails of layers
                                     ``[layer1 - layer0, H, s, s]``       ``layer0:layer1``; 2 buffers: uint8 maps,
                                                                          float32 scales
``error``                 k->view    id, message                          the reply to any request that failed
========================  =========  ===================================  ===========================================

The matrix's ``scales`` (in ``thumbs``, ``thumbs_chunk`` and the ``thumbs`` trait) are the
heads' *colour tops*: the value that uint8 code 255 stands for, the panel's ``cap``-th
percentile of each head's nonzero thumbnail pixels (pixels above it are sent as 255, drawn
darkest; ``cap = 100``: the head's max). A code ``q`` below 255 is ``q / 255 * scale``. In
compare mode (``signed``) they are the heads' largest ``|difference|``, never capped.

Progress of a background job (a LazyTrace's route on the flow panel, head statistics on
HeadSummary) travels in a synced trait, not a message: ``job`` =
:class:`JobProgress` (:func:`job_progress`; ``{}`` when nothing runs), so a view that
starts late still sees it. The flow panel's ``methods`` entries carry ``reason``: why a
method is not offered (e.g. the exact max-flow's size limit), shown on the disabled option.

``head`` is a :data:`~attn_widgets.interface.HeadSelector`: a head index or ``"mean"`` /
``"max"``. Errors have one shape, :class:`ErrorReply`, for a failed request; failures
outside a request (background thumbnails, flow scores) set the panel's ``error`` trait
(``"<what>: <ExceptionType>: <message>"``, :func:`error_text`), and the flow panel's
``status`` becomes ``"error"``. Both are shown on the panel the same way.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Literal, TypedDict, Union

from .._wire import MAX_MESSAGE_BYTES, PackedArray, check_message_size

__all__ = [
    "REQUESTS",
    "ErrorReply",
    "GetMap",
    "GetSvg",
    "GetThumbs",
    "GetTile",
    "Handler",
    "JobProgress",
    "MapAck",
    "MapReply",
    "Reply",
    "SvgReply",
    "ThumbsChunk",
    "ThumbsReply",
    "TileReply",
    "array_reply",
    "dispatch",
    "map_message",
    "svg_message",
    "thumbs_chunk",
    "thumbs_message",
    "tile_message",
    "error_reply",
    "error_text",
    "job_progress",
    "reply",
]

log = logging.getLogger("attn_widgets")

HeadField = Union[int, str]


# -- view -> kernel ---------------------------------------------------------------------


class Request(TypedDict):
    type: str
    id: str


class GetMap(Request):
    layer: int
    head: HeadField


class GetTile(Request):
    layer: int
    head: HeadField
    r0: int
    r1: int
    c0: int
    c1: int


class GetThumbs(Request):
    pass


class GetSvg(Request):
    pass


class MapAck(TypedDict):
    """A notice (no reply): the view got pushed map ``seq`` (``None``: the view started)."""

    type: Literal["map_ack"]
    seq: Union[int, None]


#: Request name -> its fields' TypedDict (``map_ack`` is a notice: its handler returns None).
REQUESTS: dict[str, type] = {"get_map": GetMap, "get_tile": GetTile, "get_thumbs": GetThumbs, "get_svg": GetSvg,
                             "map_ack": MapAck}


# -- kernel -> view ---------------------------------------------------------------------


class _ArrayHeader(TypedDict):
    dtype: str
    shape: list


class MapReply(_ArrayHeader, total=False):
    type: Literal["map"]
    id: str | None
    layer: int
    head: HeadField
    step: int  # only when the map is a max-pooled overview
    push: bool  # only on pushes (then id is None)


class TileReply(_ArrayHeader):
    type: Literal["tile"]
    id: str
    layer: int
    head: HeadField
    r0: int
    r1: int
    c0: int
    c1: int
    step: int


class ThumbsReply(TypedDict):
    type: Literal["thumbs"]
    id: str
    shape: list
    note: str


class ThumbsChunk(TypedDict):
    type: Literal["thumbs_chunk"]
    layer0: int
    layer1: int
    shape: list


class SvgReply(TypedDict):
    type: Literal["svg"]
    id: str
    bytes: int


class JobProgress(TypedDict, total=False):
    """A synced ``job`` trait: what a panel is computing in the background and how far."""

    kind: str  # "route" (flow panel) or "stats" (HeadSummary)
    what: str  # e.g. "rollout route of token 12", "head statistics"
    done: int
    total: int
    unit: str  # what done / total count: "layer"
    text: str  # the status line: "<what>: <unit> <done>/<total>"
    token: int  # kind "route": the token whose route is computed


class ErrorReply(TypedDict):
    type: Literal["error"]
    id: str | None
    message: str


#: What a handler returns: the reply's JSON fields (without ``id``) and its buffers.
Reply = tuple[dict, list]
Handler = Callable[[dict], "Reply | None"]


def reply(kind: str, buffers: list | None = None, **fields: Any) -> Reply:
    """A reply or push of type ``kind`` with raw ``buffers`` (bytes); :func:`dispatch`
    checks the total against the message cap."""
    return {"type": kind, **fields}, list(buffers or [])


def array_reply(kind: str, arrays: PackedArray | list[PackedArray], **fields: Any) -> Reply:
    """A reply carrying packed arrays: the first array's ``dtype``/``shape`` in the JSON (a
    single-array reply), every array's bytes as one buffer each."""
    arrays = [arrays] if isinstance(arrays, PackedArray) else list(arrays)
    return reply(kind, [a.data for a in arrays], **arrays[0].header(), **fields)


# -- the messages, built in one place -------------------------------------------------


def map_message(arr: Any, layer: int, head: HeadField, step: int = 1, push: bool = False) -> Reply:
    """``map``: one head's map (float16); ``step`` only when pooled, ``push`` only on pushes."""
    extra: dict = {"step": step} if step > 1 else {}
    if push:
        extra["push"] = True
    return array_reply("map", PackedArray.of(arr.astype("float16"), "float16"), layer=layer, head=head, **extra)


def tile_message(arr: Any, layer: int, head: HeadField, r0: int, r1: int, c0: int, c1: int, step: int) -> Reply:
    """``tile``: query rows ``r0:r1`` x keys ``c0:c1`` (float16, max-pooled by ``step``)."""
    return array_reply("tile", PackedArray.of(arr.astype("float16"), "float16"), layer=layer, head=head,
                       r0=r0, r1=r1, c0=c0, c1=c1, step=step)


def thumbs_message(maps: Any, scales: Any, pending: Any, note: str) -> Reply:
    """``thumbs``: every thumbnail (uint8), its scale (float32) and the preview mask (uint8)."""
    q = PackedArray.of(maps, "uint8")
    return reply("thumbs", [q.data, PackedArray.of(scales, "float32").data, PackedArray.of(pending, "uint8").data],
                 shape=list(q.shape), note=note)


def thumbs_chunk(layer: int, maps: Any, scales: Any) -> Reply:
    """``thumbs_chunk``: the exact thumbnails ``[H, s, s]`` of one layer and their scales."""
    q = PackedArray.of(maps, "uint8")
    return reply("thumbs_chunk", [q.data, PackedArray.of(scales, "float32").data],
                 layer0=layer, layer1=layer + 1, shape=[1, *q.shape])


def svg_message(svg: str) -> Reply:
    """``svg``: the panel's figure as UTF-8 bytes in one buffer."""
    data = svg.encode("utf-8")
    check_message_size(len(data), "the SVG", "write it from Python with save_svg(path)")
    return reply("svg", [data], bytes=len(data))


def job_progress(kind: str, what: str, done: int, total: int, unit: str = "layer", **extra: Any) -> JobProgress:
    """The ``job`` trait of a background computation: ``text`` is the line the panel shows
    (``"rollout route of token 12: layer 5/32"``); ``js/lib/protocol.js`` ``jobText`` builds
    the same from the other fields."""
    done, total = int(done), int(total)
    return {"kind": kind, "what": what, "done": done, "total": total, "unit": unit,
            "text": f"{what}: {unit} {done}/{total}", **extra}


def error_reply(req_id: Any, message: str) -> ErrorReply:
    """The one error shape for a failed request."""
    return {"type": "error", "id": req_id, "message": message}


def error_text(what: str, exc: BaseException) -> str:
    """The text a panel shows in its ``error`` trait for a failure outside a request."""
    return f"{what}: {type(exc).__name__}: {exc}"


def dispatch(handlers: dict[str, Handler], content: Any, send: Callable[..., Any]) -> None:
    """Answer one custom message from a view: call its handler and send the reply with the
    request's ``id``, or an :class:`ErrorReply` (unknown type, bad fields, handler error,
    reply over the cap). Never raises: a failing request must not kill the comm."""
    if not isinstance(content, dict):
        return
    kind = content.get("type")
    req_id = content.get("id")
    # A list / dict `type` is unhashable: answer it like any unknown request.
    handler = handlers.get(kind) if isinstance(kind, str) else None
    if handler is None:
        send(error_reply(req_id, f"unknown request {repr(kind)[:80]}"))
        return
    try:
        result = handler(content)
    except Exception as exc:  # report on the panel
        log.exception("attn_widgets: request %r failed", kind)
        send(error_reply(req_id, f"{type(exc).__name__}: {exc}"))
        return
    if result is None:  # a notice (e.g. map_ack): no reply
        return
    fields, buffers = result
    size = sum(len(b) for b in buffers)
    if size > MAX_MESSAGE_BYTES:  # each array is checked when packed; this is their sum
        send(error_reply(req_id, f"reply of {size} bytes is over the cap"))
        return
    send({**fields, "id": req_id}, buffers=buffers)
