"""The status page's model comparison: the ranking by P(M) and the paired differences (HTML).

The same numbers as `persistence-monitor compare` (`monitor.pipeline.compare_latest`), for the
status page and the offline report.
"""

from __future__ import annotations

import base64
from html import escape

from ..pipeline import LatestComparison

__all__ = ["comparison_section"]

# |z| from which a difference is shown as real: 3 standard errors, as the drop rule's default.
_REAL_Z = 3.0


def _f(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def comparison_section(found: LatestComparison, image: bytes | None = None) -> str:
    """A heading, the ranking table, the pairs table (with the cells that differ most) and, with
    `image`, a PNG of P(M) ± 2 standard errors per model."""
    parts = [
        "<h2>Model comparison</h2>",
        "<table><tr><th>#</th><th class='l'>model</th><th class='l'>role</th><th class='l'>version</th>"
        "<th>P(M)</th><th>± stderr</th><th>coverage</th></tr>",
    ]
    for rank, entry in enumerate(found.comparison.ranking, start=1):
        parts.append(
            f"<tr><td>{rank}</td><td class='l'><b>{escape(entry.model)}</b></td>"
            f"<td class='l'>{escape(found.roles[entry.model])}</td>"
            f"<td class='l muted'>{escape(entry.version or '–')}</td><td>{_f(entry.persistence)}</td>"
            f"<td>{_f(entry.stderr)}</td><td>{_f(entry.coverage, '.0%')}</td></tr>"
        )
    parts.append("</table>")
    if image is not None:
        parts.append(
            "<img alt='P(M) of each model with two standard errors' "
            f"src='data:image/png;base64,{base64.b64encode(image).decode()}' style='max-width:100%'>"
        )
    if found.comparison.pairs:
        parts.append(
            "<table><tr><th class='l'>first</th><th class='l'>second</th><th>difference</th>"
            "<th>± stderr</th><th>z</th><th>shared cells</th><th>unpaired</th>"
            "<th class='l'>cells that differ most</th></tr>"
        )
        for pair in found.comparison.pairs:
            z = pair.z
            z_class = (
                " style='font-weight:700' title='a real difference'"
                if z is not None and abs(z) >= _REAL_Z
                else ""
            )
            cells = ", ".join(
                f"{escape(c.task)}/{escape(c.dataset)}/{escape(c.strategy)} {c.difference:+.3f}"
                for c in pair.cells[:3]
            )
            parts.append(
                f"<tr><td class='l'>{escape(pair.first)}</td><td class='l'>{escape(pair.second)}</td>"
                f"<td>{_f(pair.difference, '+.3f')}</td><td>{_f(pair.stderr)}</td>"
                f"<td{z_class}>{_f(z, '+.1f')}</td><td>{pair.shared}</td>"
                f"<td>{pair.unpaired}</td><td class='l'>{cells or '–'}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<p class='muted'>difference: P(M) of the first minus the second over the cells both scored on "
        "the same snapshot; it is real when |z| = |difference| / stderr exceeds 2-3 "
        f"(in bold from {_REAL_Z:g}). Unpaired: cells both scored on different snapshots, left out. "
        "Alert rules without <code>models:</code> judge deployed models only.</p>"
    )
    return "".join(parts)
