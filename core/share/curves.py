"""The training-curves image of a model export: loss, reward and KL against the step.

Pillow only, so exporting needs no plotting dependency.
"""

from __future__ import annotations

import io

CURVES_FILE = "training_curves.png"

_PANELS = (
    ("Loss", ("loss",)),
    ("Reward", ("rewards/chosen", "rewards/rejected", "rewards/margins", "reward")),
    ("KL", ("kl", "objective/kl")),
)
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
            xy = [
                (left + (s - x0) / (x1 - x0) * (right - left), bottom - (v - y0) / (y1 - y0) * (bottom - top))
                for s, v in points
            ]
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


# --- reading curves -----------------------------------------------------------------------------------------------

# What each plotted metric is, in words: two figures called "accuracy" must never be confused (issue 25).
CURVE_TITLES = {  # metric -> (chart title, what it is)
    "loss": ("training loss", "solid: on the training pairs; dashed: on held-out pairs never trained on"),
    "rewards/accuracies": (
        "DPO reward accuracy",
        "rewards/accuracies: share of pairs whose chosen answer the version "
        "raised more than the rejected one, relative to the reference. Not the report's log-prob "
        "ranking accuracy, which ranks the two answers by the version's own probabilities.",
    ),
    "rewards/margins": ("DPO reward margin", "rewards/margins: beta x (chosen log-ratio - rejected log-ratio)"),
    "labeled_logratio": (
        "log-ratio on the labeled answers",
        "labeled_logratio: probability the version moved onto "
        "(+) or off (-) the chosen and rejected answers, per answer; not a KL (a KL is never "
        "negative: the report measures it on the version's own answers)",
    ),
    "kl": ("KL to the reference", "online RL, on the policy's own samples"),
}
OVERFIT_RISE = 0.05  # held-out loss this far (relative) above its best while training loss kept falling


def overfitting_step(train: list[tuple[int, float]], held_out: list[tuple[int, float]]) -> int | None:
    """The step after which held-out loss rose while training loss kept falling (memorising), or None.

    Measured on a 44-label DPO run: training loss went to 0 while held-out loss rose from step ~12; the curves
    showed it but nothing said so."""
    if len(held_out) < 3 or not train:
        return None
    best_step, best = min(held_out, key=lambda p: (p[1], p[0]))
    last_step, last = max(held_out)
    if best_step >= last_step or last <= best + OVERFIT_RISE * max(abs(best), 1e-6):
        return None
    before = [v for s, v in train if s <= best_step] or [train[0][1]]  # held-out evaluation starts at step 0
    after = [v for s, v in train if s >= last_step - 1e-9] or [train[-1][1]]
    return best_step if after[-1] < before[-1] else None
