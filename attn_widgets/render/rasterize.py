"""Rasterise the figures' own SVG to pixels, labels included, with numpy only.

The PNG a user saves from Python must carry the same labels and colour bar as the SVG.
There is no font or SVG library to lean on (no PIL, no cairo), so this draws the *subset
of SVG that attn_widgets' renderers write* (:mod:`attn_widgets.render`): ``rect`` (solid
or a vertical ``linearGradient``), ``line``, ``circle``, ``path`` (``M L H V Z``
polygons), ``image`` (the embedded PNGs, nearest neighbour, ``clipPath`` rectangles),
``text`` (the built-in 5 x 7 bitmap font of :mod:`.bitmapfont`; ``text-anchor``, ``dy``
in em, ``rotate(-90)``), nested ``svg`` (the Explorer's composition) and ``g`` with
``translate`` and inherited presentation attributes. It is not a general SVG renderer:
anything else is skipped.
"""

from __future__ import annotations

import base64
import math
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from typing import Any

import numpy as np

from .bitmapfont import GLYPH_H, text_mask
from .svg import colour_rgb

__all__ = ["svg_to_array", "decode_png"]

_NS = "{http://www.w3.org/2000/svg}"
_XLINK = "{http://www.w3.org/1999/xlink}href"
_INHERITED = ("fill", "stroke", "stroke-width", "stroke-opacity", "fill-opacity", "font-size", "font-weight",
              "text-anchor", "font-style")
#: Largest canvas drawn (pixels): a bound on memory whatever the figure asks.
MAX_PIXELS = 64_000_000


def decode_png(data: bytes) -> np.ndarray:
    """``uint8 [H, W, C]`` of a PNG from :func:`.png.encode_png` (8-bit grey / RGB / RGBA;
    filters 0-4, so other simple encoders' files work too)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("data: not a PNG")
    pos, idat, head = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if tag == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
    if head is None:
        raise ValueError("data: PNG without IHDR")
    w, h, depth, ctype, _, _, interlace = head
    c = {0: 1, 2: 3, 6: 4, 4: 2}.get(ctype)
    if depth != 8 or c is None or interlace:
        raise ValueError(f"data: unsupported PNG (bit depth {depth}, colour type {ctype}, interlace {interlace})")
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + w * c)
    out = np.zeros((h, w * c), np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        prev = out[y - 1] if y else np.zeros(w * c, np.int32)
        if f == 0:
            out[y] = line
        elif f == 2:
            out[y] = (line + prev) & 255
        else:  # 1 (sub), 3 (average), 4 (paeth): sequential along the row
            row = np.zeros(w * c, np.int32)
            for i in range(w * c):
                a = row[i - c] if i >= c else 0
                b = prev[i]
                if f == 1:
                    row[i] = (line[i] + a) & 255
                elif f == 3:
                    row[i] = (line[i] + (a + b) // 2) & 255
                else:
                    cc = prev[i - c] if i >= c else 0
                    p = a + b - cc
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                    pr = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
                    row[i] = (line[i] + pr) & 255
            out[y] = row
    return out.astype(np.uint8).reshape(h, w, c)


def _float(v: Any, default: float = 0.0) -> float:
    if v is None:
        return default
    m = re.match(r"\s*(-?[\d.]+(?:e-?\d+)?)", str(v))
    return float(m.group(1)) if m else default


def _translate(transform: str | None) -> tuple[float, float, bool]:
    """``(dx, dy, rotated)`` of a ``translate(x[,y])`` optionally followed by ``rotate(-90)``."""
    if not transform:
        return 0.0, 0.0, False
    m = re.search(r"translate\(\s*(-?[\d.]+)(?:[\s,]+(-?[\d.]+))?\s*\)", transform)
    dx, dy = (float(m.group(1)), float(m.group(2) or 0)) if m else (0.0, 0.0)
    return dx, dy, bool(re.search(r"rotate\(\s*-90\s*\)", transform))


class _Canvas:
    def __init__(self, width: float, height: float, scale: int) -> None:
        self.k = scale
        h, w = max(1, math.ceil(height * scale)), max(1, math.ceil(width * scale))
        if h * w > MAX_PIXELS:
            raise ValueError(
                f"scale: a {w} x {h} px PNG is over the {MAX_PIXELS // 1_000_000} Mpx limit; "
                "pass a smaller scale (or save_svg, which has no size limit)"
            )
        self.img = np.full((h, w, 3), 255.0, dtype=np.float32)
        self.gradients: dict[str, list[tuple[float, tuple[int, int, int]]]] = {}
        self.clips: dict[str, tuple[float, float, float, float]] = {}

    # -- primitives (coordinates in SVG px; self.k pixels per SVG px) ------------------------
    def blend(self, ys: slice, xs: slice, colour: Any, alpha: Any) -> None:
        region = self.img[ys, xs]
        if region.size == 0:
            return
        a = np.asarray(alpha, dtype=np.float32)
        if a.ndim == 2:
            a = a[:, :, None]
        region *= 1 - a
        region += a * np.asarray(colour, dtype=np.float32)

    def _box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        k, (h, w) = self.k, self.img.shape[:2]
        r0, r1 = max(0, round(y0 * k)), min(h, round(y1 * k))
        c0, c1 = max(0, round(x0 * k)), min(w, round(x1 * k))
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))

    def rect(self, x: float, y: float, w: float, h: float, colour: Any, alpha: float) -> None:
        ys, xs = self._box(x, y, x + w, y + h)
        self.blend(ys, xs, colour, alpha)

    def gradient_rect(self, x: float, y: float, w: float, h: float, stops: list, alpha: float) -> None:
        ys, xs = self._box(x, y, x + w, y + h)
        n = ys.stop - ys.start
        if n <= 0 or xs.stop <= xs.start:
            return
        # Vertical gradients only (x1 = x2): offset 0 at the bottom, as the colour bars.
        t = 1 - (np.arange(n) + 0.5) / n
        offs = np.array([o for o, _ in stops])
        cols = np.array([c for _, c in stops], dtype=np.float32)
        rgb = np.stack([np.interp(t, offs, cols[:, j]) for j in range(3)], axis=1)
        region = self.img[ys, xs]
        region *= 1 - alpha
        region += alpha * rgb[:, None, :]

    def stroke_rect(self, x: float, y: float, w: float, h: float, sw: float, colour: Any, alpha: float) -> None:
        d = sw / 2
        for bx in ((x - d, y - d, w + sw, sw), (x - d, y + h - d, w + sw, sw),
                   (x - d, y + d, sw, h - sw), (x + w - d, y + d, sw, h - sw)):
            self.rect(*bx, colour, alpha)

    def line(self, x0: float, y0: float, x1: float, y1: float, sw: float, colour: Any, alpha: float) -> None:
        k = self.k
        r = max(sw * k / 2, 0.5)
        ys, xs = self._box(min(x0, x1) - r / k - 1, min(y0, y1) - r / k - 1, max(x0, x1) + r / k + 1,
                           max(y0, y1) + r / k + 1)
        if ys.stop <= ys.start or xs.stop <= xs.start:
            return
        py = (np.arange(ys.start, ys.stop) + 0.5)[:, None]
        px = (np.arange(xs.start, xs.stop) + 0.5)[None, :]
        ax, ay, bx, by = x0 * k, y0 * k, x1 * k, y1 * k
        dx, dy = bx - ax, by - ay
        ll = dx * dx + dy * dy
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / ll, 0, 1) if ll > 0 else np.zeros_like(px + py)
        dist = np.hypot(px - (ax + t * dx), py - (ay + t * dy))
        cover = np.clip(r + 0.5 - dist, 0, 1)  # one pixel of anti-aliasing at the edge
        self.blend(ys, xs, colour, cover * alpha)

    def circle(self, cx: float, cy: float, r: float, colour: Any, alpha: float) -> None:
        self.line(cx, cy, cx, cy, 2 * r, colour, alpha)

    def polygon(self, pts: list[tuple[float, float]], colour: Any, alpha: float) -> None:
        if len(pts) < 3:
            return
        k = self.k
        xs_, ys_ = [p[0] for p in pts], [p[1] for p in pts]
        ys, xs = self._box(min(xs_), min(ys_), max(xs_), max(ys_))
        if ys.stop <= ys.start or xs.stop <= xs.start:
            return
        py = (np.arange(ys.start, ys.stop) + 0.5)[:, None] / k
        px = (np.arange(xs.start, xs.stop) + 0.5)[None, :] / k
        inside = np.zeros((ys.stop - ys.start, xs.stop - xs.start), dtype=bool)
        for (xa, ya), (xb, yb) in zip(pts, pts[1:] + pts[:1]):  # even-odd crossings
            if ya == yb:
                continue
            cross = ((ya > py) != (yb > py)) & (px < xa + (py - ya) * (xb - xa) / (yb - ya))
            inside ^= cross
        self.blend(ys, xs, colour, inside.astype(np.float32) * alpha)

    def image(self, x: float, y: float, w: float, h: float, pixels: np.ndarray, clip: Any) -> None:
        x1, y1 = x + w, y + h
        if clip is not None:
            cx, cy, cw, ch = clip
            ys, xs = self._box(max(x, cx), max(y, cy), min(x1, cx + cw), min(y1, cy + ch))
        else:
            ys, xs = self._box(x, y, x1, y1)
        if ys.stop <= ys.start or xs.stop <= xs.start or w <= 0 or h <= 0:
            return
        k = self.k
        ph, pw = pixels.shape[:2]
        ri = np.clip(((np.arange(ys.start, ys.stop) + 0.5) / k - y) / h * ph, 0, ph - 1).astype(int)
        ci = np.clip(((np.arange(xs.start, xs.stop) + 0.5) / k - x) / w * pw, 0, pw - 1).astype(int)
        src = pixels[ri][:, ci]
        if src.shape[2] in (1, 2):
            src = np.repeat(src[:, :, :1], 3, axis=2) if src.shape[2] == 1 else np.concatenate(
                [np.repeat(src[:, :, :1], 3, axis=2), src[:, :, 1:]], axis=2)
        if src.shape[2] == 4:
            self.blend(ys, xs, src[:, :, :3], src[:, :, 3].astype(np.float32) / 255)
        else:
            self.img[ys, xs] = src[:, :, :3]

    def text(self, s: str, x: float, y: float, font_px: float, anchor: str, colour: Any, alpha: float,
             bold: bool, rotated: bool) -> None:
        k = self.k
        gs = max(1, round(0.1 * font_px * k))  # glyph scale: cap height ~0.7 em, as the layout assumes
        mask = text_mask(s, gs)
        if bold and mask.shape[1]:
            mask = mask | np.pad(mask, ((0, 0), (1, 0)))[:, :-1]
        if mask.size == 0:
            return
        mh, mw = mask.shape
        # Local frame: (u along the text, v down); the baseline is the box bottom.
        u0 = {"middle": -mw / 2, "end": -mw}.get(anchor, 0.0) / k
        v0 = -GLYPH_H * gs / k
        if rotated:  # rotate(-90): local (u, v) -> screen (x + v, y - u)
            mask = np.rot90(mask, 1)
            left, top = x + v0, y - u0 - mw / k
        else:
            left, top = x + u0, y + v0
        r0, c0 = round(top * k), round(left * k)
        h, w = self.img.shape[:2]
        rr0, cc0 = max(0, r0), max(0, c0)
        rr1, cc1 = min(h, r0 + mask.shape[0]), min(w, c0 + mask.shape[1])
        if rr1 <= rr0 or cc1 <= cc0:
            return
        sub = mask[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0].astype(np.float32)
        self.blend(slice(rr0, rr1), slice(cc0, cc1), colour, sub * alpha)


def _colour(v: Any) -> tuple[int, int, int] | None:
    if v is None or v == "none":
        return None
    try:
        return colour_rgb(v)
    except ValueError:
        return None


def _walk(cv: _Canvas, el: ET.Element, ox: float, oy: float, inh: dict, opacity: float) -> None:
    tag = el.tag.replace(_NS, "")
    attrs = {**inh, **{k: v for k, v in el.attrib.items() if k in _INHERITED}}
    op = opacity * _float(el.get("opacity"), 1.0)
    if tag == "defs":
        for d in el:
            dt = d.tag.replace(_NS, "")
            if dt == "linearGradient":
                cv.gradients[d.get("id", "")] = [
                    (_float(s.get("offset")), _colour(s.get("stop-color")) or (0, 0, 0)) for s in d
                ]
            elif dt == "clipPath":
                for r in d:
                    cv.clips[d.get("id", "")] = (ox + _float(r.get("x")), oy + _float(r.get("y")),
                                                 _float(r.get("width")), _float(r.get("height")))
        return
    if tag in ("title", "desc", "metadata", "style"):
        return
    if tag in ("g", "svg"):
        dx, dy, _rot = _translate(el.get("transform"))
        if tag == "svg" and el is not _walk.root:  # type: ignore[attr-defined]
            dx, dy = dx + _float(el.get("x")), dy + _float(el.get("y"))
        for child in el:
            _walk(cv, child, ox + dx, oy + dy, attrs, op)
        return
    fill = attrs.get("fill", "#000")
    fa = op * _float(attrs.get("fill-opacity"), 1.0)
    stroke = _colour(attrs.get("stroke"))
    sa = op * _float(attrs.get("stroke-opacity"), 1.0)
    sw = _float(attrs.get("stroke-width"), 1.0)
    g = lambda name: _float(el.get(name))  # noqa: E731
    if tag == "rect":
        x, y, w, h = ox + g("x"), oy + g("y"), g("width"), g("height")
        m = re.fullmatch(r"url\(#(.+)\)", fill or "")
        if m and m.group(1) in cv.gradients:
            cv.gradient_rect(x, y, w, h, cv.gradients[m.group(1)], fa)
        elif _colour(fill) is not None:
            cv.rect(x, y, w, h, _colour(fill), fa)
        if stroke is not None:
            cv.stroke_rect(x, y, w, h, sw, stroke, sa)
    elif tag == "line":
        if stroke is not None:
            cv.line(ox + g("x1"), oy + g("y1"), ox + g("x2"), oy + g("y2"), sw, stroke, sa)
    elif tag == "circle":
        if _colour(fill) is not None:
            cv.circle(ox + g("cx"), oy + g("cy"), g("r"), _colour(fill), fa)
    elif tag == "path":
        c = _colour(fill)
        if c is not None:
            pts, cur = [], (0.0, 0.0)
            for cmd, nums in re.findall(r"([MLHVZ])([^MLHVZ]*)", el.get("d", "")):
                v = [float(n) for n in re.findall(r"-?[\d.]+(?:e-?\d+)?", nums)]
                if cmd in "ML" and len(v) >= 2:
                    cur = (v[0], v[1])
                elif cmd == "H" and v:
                    cur = (v[0], cur[1])
                elif cmd == "V" and v:
                    cur = (cur[0], v[0])
                elif cmd == "Z":
                    cv.polygon([(ox + px, oy + py) for px, py in pts], c, fa)
                    pts = []
                    continue
                pts.append(cur)
            if pts:
                cv.polygon([(ox + px, oy + py) for px, py in pts], c, fa)
    elif tag == "image":
        href = el.get(_XLINK) or el.get("href") or ""
        if href.startswith("data:image/png;base64,"):
            pixels = decode_png(base64.b64decode(href.split(",", 1)[1]))
            m = re.fullmatch(r"url\(#(.+)\)", el.get("clip-path") or "")
            cv.image(ox + g("x"), oy + g("y"), g("width"), g("height"), pixels,
                     cv.clips.get(m.group(1)) if m else None)
    elif tag == "text":
        c = _colour(fill)
        if c is None or not el.text:
            return
        font_px = _float(attrs.get("font-size"), 11.0)
        dx, dy, rotated = _translate(el.get("transform"))
        dy_attr = el.get("dy") or "0"
        shift = _float(dy_attr) * (font_px if dy_attr.endswith("em") else 1.0)
        x, y = g("x"), g("y") + shift
        if rotated:  # the rotation is about the translated origin: dy moves along screen x
            x, y = dx + (g("y") + shift), dy - g("x")
            cv.text(el.text, ox + x, oy + y, font_px, attrs.get("text-anchor", "start"), c, fa,
                    attrs.get("font-weight") == "bold", True)
        else:
            cv.text(el.text, ox + dx + x, oy + dy + y, font_px, attrs.get("text-anchor", "start"), c, fa,
                    attrs.get("font-weight") == "bold", False)


def svg_to_array(svg: str, scale: int = 2) -> np.ndarray:
    """``uint8 [H, W, 3]`` pixels of an attn_widgets SVG figure, ``scale`` pixels per SVG px."""
    root = ET.fromstring(svg.encode("utf-8"))
    width, height = _float(root.get("width")), _float(root.get("height"))
    cv = _Canvas(width, height, int(scale))
    _walk.root = root  # type: ignore[attr-defined]
    _walk(cv, root, 0.0, 0.0, {}, 1.0)
    return np.clip(np.rint(cv.img), 0, 255).astype(np.uint8)
