"""Charts drawn on the server as SVG (no script, no library): usage over time per tenant and model."""

from __future__ import annotations

from collections import defaultdict
from html import escape

WIDTH, HEIGHT, PAD = 720, 240, 40
# Colours that read on light and dark backgrounds alike.
PALETTE = ("#2f7ed8", "#e4572e", "#29a36a", "#c9a227", "#8e5ad8", "#d84a9b", "#3aa6b9", "#7a7a7a")
MAX_SERIES = len(PALETTE)


def usage_chart(rows: list[dict], metric: str) -> str:
    """An SVG line per tenant/model of `metric` per day (the busiest MAX_SERIES; the rest summed as 'other')."""
    days = sorted({r["day"] for r in rows})
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        totals[f"{r['tenant']} / {r['model']}"][r["day"]] += float(r[metric] or 0)
    ranked = sorted(totals, key=lambda s: -sum(totals[s].values()))
    if len(ranked) > MAX_SERIES:
        other: dict[str, float] = defaultdict(float)
        for name in ranked[MAX_SERIES - 1:]:
            for day, value in totals[name].items():
                other[day] += value
        ranked = ranked[:MAX_SERIES - 1]
        totals["other"] = other
        ranked.append("other")
    title = f"{metric.replace('_', ' ')} per day"
    if not days:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}: no usage yet" '
                f'viewBox="0 0 {WIDTH} 60" class="chart"><text x="10" y="35">no usage yet</text></svg>')
    top = max((v for s in ranked for v in totals[s].values()), default=0.0) or 1.0
    step = (WIDTH - 2 * PAD) / max(1, len(days) - 1)

    def xy(i: int, value: float) -> str:
        return f"{PAD + i * step:.1f},{HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / top:.1f}"

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT + 20 * len(ranked)}" class="chart"><title>{escape(title)}</title>',
           f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" class="axis"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" class="axis"/>',
           f'<text x="{PAD - 4}" y="{PAD}" text-anchor="end" class="tick">{_num(top)}</text>',
           f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" text-anchor="end" class="tick">0</text>',
           f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" class="tick">{escape(days[0])}</text>',
           *([f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" text-anchor="end" class="tick">{escape(days[-1])}'
               '</text>'] if len(days) > 1 else [])]
    for n, name in enumerate(ranked):
        colour = PALETTE[n % len(PALETTE)]
        points = " ".join(xy(i, totals[name].get(day, 0.0)) for i, day in enumerate(days))
        shape = (f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>' if len(days) > 1
                 else f'<circle cx="{points.split(",")[0]}" cy="{points.split(",")[1]}" r="4" fill="{colour}"/>')
        out.append(shape)
        y = HEIGHT + 20 * n + 4
        out.append(f'<rect x="{PAD}" y="{y}" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{PAD + 18}" y="{y + 11}" class="legend">{escape(name)} '
                   f'({_num(sum(totals[name].values()))})</text>')
    out.append("</svg>")
    return "".join(out)


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"
