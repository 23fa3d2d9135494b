"""The 30-day spend chart, drawn here as SVG: no script, no chart library, no CDN."""

from __future__ import annotations

from datetime import date
from html import escape

WIDTH, HEIGHT, AXIS = 600, 140, 18


def spend_bars(by_day: dict[date, float]) -> str:
    days = sorted(by_day)
    if not days:
        return ""
    top = max(by_day.values())
    scale = (HEIGHT - AXIS - 14) / top if top > 0 else 0.0
    step = WIDTH / len(days)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="Spend per day, last {len(days)} days" '
             'xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="0" y1="{HEIGHT - AXIS}" x2="{WIDTH}" y2="{HEIGHT - AXIS}" class="axis"/>']
    for i, day in enumerate(days):
        usd = by_day[day]
        h = max(usd * scale, 1.0 if usd > 0 else 0.0)
        x, y = i * step + 1, HEIGHT - AXIS - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step - 2:.1f}" height="{h:.1f}">'
                     f'<title>{escape(day.isoformat())}: ${usd:.2f}</title></rect>')
    parts.append(f'<text x="0" y="{HEIGHT - 4}">{escape(days[0].strftime("%b %d"))}</text>')
    parts.append(f'<text x="{WIDTH}" y="{HEIGHT - 4}" text-anchor="end">'
                 f'{escape(days[-1].strftime("%b %d"))}</text>')
    parts.append(f'<text x="0" y="10">max ${top:.2f}/day</text>')
    parts.append("</svg>")
    return "".join(parts)
