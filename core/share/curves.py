"""The training-curves image of a model export: loss, reward and KL against the step.

Pillow only, so exporting needs no plotting dependency.
"""
from __future__ import annotations

import io

CURVES_FILE = "training_curves.png"

_PANELS = (("Loss", ("loss",)),
           ("Reward", ("rewards/chosen", "rewards/rejected", "rewards/margins", "reward")),
           ("KL", ("kl", "objective/kl")))
_COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def curves_png(series: dict[str, list[tuple[int, float]]], width: int = 1200, height: int = 360) -> bytes | None:
    """Loss, reward and KL against the step, one panel each, as a PNG; None without any of them."""
    from PIL import Image, ImageDraw, ImageFont

    panels = [(title, [(n, series[n]) for n in names if len(series.get(n, ())) > 0]) for title, names in _PANELS]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    panel_w = width // len(panels)
    for index, (title, lines) in enumerate(panels):
        left, top = index * panel_w + 60, 34
        right, bottom = (index + 1) * panel_w - 16, height - 60
        steps = [s for _, points in lines for s, _ in points]
        values = [v for _, points in lines for _, v in points]
        x0, x1 = min(steps), max(steps)
        y0, y1 = min(values), max(values)
        if x1 == x0:
            x1 = x0 + 1
        if y1 == y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        draw.text(((left + right) // 2, 10), title, fill="black", font=font, anchor="mt")
        draw.rectangle((left, top, right, bottom), outline=(180, 180, 180))
        for frac in (0.0, 0.5, 1.0):
            y = bottom - frac * (bottom - top)
            draw.line((left, y, right, y), fill=(235, 235, 235))
            draw.text((left - 6, y), f"{y0 + frac * (y1 - y0):.3g}", fill="black", font=font, anchor="rm")
        draw.text((left, bottom + 6), str(x0), fill="black", font=font, anchor="lt")
        draw.text((right, bottom + 6), str(x1), fill="black", font=font, anchor="rt")
        draw.text(((left + right) // 2, bottom + 6), "step", fill="black", font=font, anchor="mt")
        for k, (name, points) in enumerate(lines):
            color = _COLORS[k % len(_COLORS)]
            xy = [(left + (s - x0) / (x1 - x0) * (right - left), bottom - (v - y0) / (y1 - y0) * (bottom - top))
                  for s, v in points]
            if len(xy) == 1:
                draw.ellipse((xy[0][0] - 3, xy[0][1] - 3, xy[0][0] + 3, xy[0][1] + 3), fill=color)
            else:
                draw.line(xy, fill=color, width=2)
            lx, ly = left + 4 + 150 * (k % 2), bottom + 24 + 14 * (k // 2)
            draw.line((lx, ly + 7, lx + 14, ly + 7), fill=color, width=2)
            draw.text((lx + 18, ly), name, fill=color, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
