"""Tiny inline-SVG builders for report.html (no plotting library, nothing fetched)."""
from __future__ import annotations

from html import escape


def esc(x) -> str:
    return escape(str(x), quote=True)


def attrs(**kw) -> str:
    """``class_="a" data_x=1`` -> ``class="a" data-x="1"`` (None values are left out)."""
    out = []
    for k, v in kw.items():
        if v is None:
            continue
        name = k.rstrip("_").replace("_", "-")
        out.append(f'{name}="{esc(v)}"')
    return " ".join(out)


def svg(width: float, height: float, body: list[str], **kw) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="system-ui, sans-serif" '
            f'{attrs(**kw)}>' + "".join(body) + "</svg>")


def rect(x, y, w, h, fill, title: str | None = None, **kw) -> str:
    t = f"<title>{esc(title)}</title>" if title else ""
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{h:.1f}" '
            f'fill="{fill}" {attrs(**kw)}>{t}</rect>')


def line(x1, y1, x2, y2, stroke="#333", width=1.0, dash: str | None = None, **kw) -> str:
    d = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
            f'stroke-width="{width}"{d} {attrs(**kw)}/>')


def text(x, y, s, size=11, anchor="start", fill="#222", **kw) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}" {attrs(**kw)}>{esc(s)}</text>')


def circle(x, y, r, fill, stroke="#222", title: str | None = None, **kw) -> str:
    t = f"<title>{esc(title)}</title>" if title else ""
    return (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="{stroke}" '
            f'{attrs(**kw)}>{t}</circle>')


def polyline(points: list[tuple[float, float]], stroke: str, width=1.5, **kw) -> str:
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (f'<polyline points="{pts}" fill="none" stroke="{stroke}" stroke-width="{width}" '
            f'{attrs(**kw)}/>')


def arrow_marker(mid: str, color: str) -> str:
    """A <marker> for line ends (``marker-end="url(#mid)"``)."""
    return (f'<marker id="{mid}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{color}"/></marker>')


def nice_step(span: float, ticks: int = 6) -> float:
    """A round axis step (1, 2 or 5 x 10^n) giving about ``ticks`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1.0
    if raw < 1:
        mag = 1.0
        while mag > raw:
            mag /= 10
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def legend(items: list[tuple[str, str]], x=0.0, y=0.0) -> tuple[list[str], float]:
    """Colour swatches with labels on one line; returns (elements, width used)."""
    out, cx = [], x
    for color, label in items:
        out.append(rect(cx, y, 12, 12, color, stroke="#718096"))
        out.append(text(cx + 16, y + 10, label, size=11))
        cx += 26 + 6.5 * len(label)
    return out, cx - x
