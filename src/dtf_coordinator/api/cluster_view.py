"""`/api/cluster/visualize`: the cluster drawn as SVG, alone or in a small HTML page.

The drawing has the nodes on a ring (the leader first, at the top) coloured by role,
with each node's term and uptime, a dashed outline for a disabled node, a line from the
leader to every follower and, under each follower, how far the leader's log has reached
it (match index against the leader's last index); below, the leadership timeline: one
band per leader since the first change this coordinator saw, up to now. Pure functions
of the status and leader views; no scripts, fonts or images from anywhere else.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from html import escape

from dtf_coordinator.api.models import ClusterNode, ClusterStatus, LeaderInfo, LeadershipChange

WIDTH = 960
RING_HEIGHT = 440
TIMELINE_HEIGHT = 150
NODE_RADIUS = 46
RING_RADIUS = 150
COLOURS = {
    "leader": "#2b8a3e",
    "follower": "#1c7ed6",
    "candidate": "#e67700",
    "offline": "#868e96",
    "unknown": "#adb5bd",
    "stopped": "#c92a2a",
}
HEALTH_COLOURS = {"healthy": "#2b8a3e", "degraded": "#e67700", "unhealthy": "#c92a2a"}
NO_LEADER = "#dee2e6"
LEADER_PALETTE = ("#2b8a3e", "#1c7ed6", "#7048e8", "#d6336c", "#0c8599", "#e67700", "#5c940d", "#862e9c")


def _text(x: float, y: float, content: str, *, size: int = 12, anchor: str = "middle", **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>{escape(content)}</text>'


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "-"


def leader_colour(node_id: str | None) -> str:
    if node_id is None:
        return NO_LEADER
    digest = hashlib.sha256(node_id.encode()).digest()
    return LEADER_PALETTE[digest[0] % len(LEADER_PALETTE)]


def _positions(nodes: list[ClusterNode], leader_id: str | None) -> list[tuple[ClusterNode, float, float]]:
    ordered = sorted(nodes, key=lambda n: (n.node_id != leader_id, n.node_id))
    cx, cy = WIDTH / 2, 60 + RING_RADIUS + NODE_RADIUS
    if len(ordered) == 1:
        return [(ordered[0], cx, cy)]
    placed = []
    for i, node in enumerate(ordered):
        angle = -math.pi / 2 + 2 * math.pi * i / len(ordered)
        placed.append((node, cx + RING_RADIUS * 1.6 * math.cos(angle), cy + RING_RADIUS * math.sin(angle)))
    return placed


def _between(a: tuple[float, float], b: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The segment from circle `a` to circle `b`, edge to edge."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length * NODE_RADIUS, dy / length * NODE_RADIUS
    return (a[0] + ux, a[1] + uy), (b[0] - ux, b[1] - uy)


def _node(node: ClusterNode, x: float, y: float, last_index: int) -> list[str]:
    colour = COLOURS.get(node.state, COLOURS["unknown"])
    dash = ' stroke-dasharray="6 4" fill-opacity="0.35"' if node.disabled else ""
    parts = [
        f'<g class="node" data-node-id="{escape(node.node_id)}" data-state="{node.state}">',
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{NODE_RADIUS}" fill="{colour}" '
        f'stroke="#212529" stroke-width="2"{dash}/>',
        _text(x, y - 8, node.node_id, size=12, fill="#ffffff", font_weight="bold"),
        _text(x, y + 8, node.state + (" (disabled)" if node.disabled else ""), size=11, fill="#ffffff"),
        _text(x, y + 22, f"term {node.term if node.term is not None else '?'}", size=11, fill="#ffffff"),
        _text(x, y + NODE_RADIUS + 16, f"up {_duration(node.uptime_seconds)}", size=11, fill="#495057"),
    ]
    progress = node.progress
    if progress is not None:
        width = 110.0
        share = min(1.0, progress.match / last_index) if last_index > 0 else 1.0
        top = y + NODE_RADIUS + 24
        parts += [
            f'<rect x="{x - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" height="9" '
            'fill="#e9ecef" stroke="#adb5bd"/>',
            f'<rect class="replication" x="{x - width / 2:.1f}" y="{top:.1f}" width="{width * share:.1f}" height="9" '
            f'fill="{COLOURS["follower"] if progress.recent_active else COLOURS["offline"]}"/>',
            _text(x, top + 22, f"match {progress.match}/{last_index} · {progress.state}", size=10, fill="#495057"),
        ]
    parts.append("</g>")
    return parts


def _timeline(history: list[LeadershipChange], now: datetime, top: float) -> list[str]:
    left, right = 40.0, WIDTH - 40.0
    parts = [_text(left, top + 16, "Leadership timeline", size=13, anchor="start", font_weight="bold")]
    changes = sorted(history, key=lambda c: c.timestamp)
    if not changes:
        parts.append(_text(left, top + 50, "no change of leader seen yet", size=12, anchor="start", fill="#868e96"))
        return parts
    start = changes[0].timestamp.timestamp()
    span = max(1.0, now.timestamp() - start)

    def at(moment: float) -> float:
        return left + (right - left) * (moment - start) / span

    band_top = top + 30
    for n, change in enumerate(changes):
        begin = change.timestamp.timestamp()
        end = changes[n + 1].timestamp.timestamp() if n + 1 < len(changes) else now.timestamp()
        x0, x1 = at(begin), max(at(end), at(begin) + 1)
        who = change.new_leader_id or "no leader"
        title = f"term {change.term}: {who} ({change.reason}) from {change.timestamp.isoformat()}"
        parts.append(
            f'<rect class="term" x="{x0:.1f}" y="{band_top:.1f}" width="{x1 - x0:.1f}" height="30" '
            f'fill="{leader_colour(change.new_leader_id)}" stroke="#ffffff"><title>{escape(title)}</title></rect>'
        )
        if x1 - x0 > 60:
            parts.append(_text((x0 + x1) / 2, band_top + 19, f"{who} · t{change.term}", size=10, fill="#ffffff"))
        parts.append(
            f'<line x1="{x0:.1f}" y1="{band_top + 30:.1f}" x2="{x0:.1f}" y2="{band_top + 40:.1f}" stroke="#495057"/>'
        )
    first, last = changes[0].timestamp, now
    parts.append(_text(left, band_top + 54, first.strftime("%H:%M:%S"), size=10, anchor="start", fill="#495057"))
    parts.append(_text(right, band_top + 54, last.strftime("%H:%M:%S UTC"), size=10, anchor="end", fill="#495057"))
    newest = changes[-1]
    line = f"latest: {newest.previous_leader_id or '-'} → {newest.new_leader_id or '-'} in term {newest.term} "
    line += f"({newest.reason})"
    parts.append(_text(left, band_top + 80, line, size=11, anchor="start", fill="#212529"))
    return parts


def render_svg(status: ClusterStatus, leader: LeaderInfo, *, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    height = RING_HEIGHT + TIMELINE_HEIGHT
    placed = _positions(status.nodes, status.leader_id)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        'font-family="sans-serif" role="img" aria-label="dtf coordinator cluster">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        _text(
            20,
            28,
            f"leader {status.leader_id or 'none'} · term {status.current_term} · quorum {status.quorum_size} "
            f"of {len(status.nodes)} · commit {status.commit_index} · "
            f"applied {status.applied_index}",
            size=14,
            anchor="start",
            font_weight="bold",
        ),
        f'<circle cx="{WIDTH - 150}" cy="23" r="7" fill="{HEALTH_COLOURS[status.cluster_health]}"/>',
        _text(WIDTH - 136, 28, status.cluster_health, size=14, anchor="start"),
        _text(20, 48, f"as seen by {status.reported_by} at {now.strftime('%Y-%m-%d %H:%M:%S UTC')}", anchor="start"),
    ]
    centre = next(((x, y) for node, x, y in placed if node.node_id == status.leader_id), None)
    if centre is not None:
        for node, x, y in placed:
            if node.node_id != status.leader_id:
                active = node.progress is None or node.progress.recent_active
                style = 'stroke="#495057" stroke-width="2"' if active else 'stroke="#adb5bd" stroke-dasharray="4 4"'
                (x0, y0), (x1, y1) = _between(centre, (x, y))
                parts.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" {style}/>')
    for node, x, y in placed:
        parts += _node(node, x, y, status.last_index)
    parts += _timeline(leader.leadership_history, now, RING_HEIGHT)
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(status: ClusterStatus, leader: LeaderInfo, *, refresh_s: int = 0, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s > 0 else ""
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(str(cell))}</td>"
            for cell in (
                node.node_id,
                node.state + (" (disabled)" if node.disabled else ""),
                node.term if node.term is not None else "?",
                _when(node.last_heartbeat),
                _duration(node.uptime_seconds),
                f"{node.progress.match} ({node.progress.state})" if node.progress else "-",
                node.api_url or "-",
            )
        )
        + "</tr>"
        for node in status.nodes
    )
    changes = "".join(
        f"<tr><td>{_when(c.timestamp)}</td><td>{c.term}</td><td>{escape(c.previous_leader_id or '-')}</td>"
        f"<td>{escape(c.new_leader_id or '-')}</td><td>{escape(c.reason)}</td>"
        f"<td>{_duration(c.duration_seconds)}</td></tr>"
        for c in leader.leadership_history
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<title>dtf cluster: {escape(status.cluster_health)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5rem; color: #212529; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #dee2e6; padding: 0.3rem 0.6rem; text-align: left; font-size: 0.9rem; }}
th {{ background: #f1f3f5; }}
</style></head>
<body>
<h1>dtf coordinator cluster</h1>
{render_svg(status, leader, now=now)}
<h2>Nodes</h2>
<table><tr><th>node</th><th>state</th><th>term</th><th>last heartbeat</th><th>uptime</th>
<th>replicated to</th><th>API</th></tr>{rows}</table>
<h2>Leadership history</h2>
<table><tr><th>time</th><th>term</th><th>previous leader</th><th>new leader</th><th>reason</th><th>lasted</th></tr>
{changes or '<tr><td colspan="6">no change of leader seen yet</td></tr>'}</table>
</body></html>
"""
