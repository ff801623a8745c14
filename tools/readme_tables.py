"""Generates the configuration and metrics tables of the docs from the code.

`python tools/readme_tables.py --write` (`make docs`) rewrites the tables between their markers
in docs/configuration.md and docs/metrics.md; tests/test_readme.py fails when the docs and the
code disagree.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from gme_recwatch import settings
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
# Each table: its marker, and the page that holds it.
MARKERS = {"config": "config-table", "metrics": "metrics-table"}
PAGES = {"config": DOCS / "configuration.md", "metrics": DOCS / "metrics.md"}


def config_table() -> str:
    rows = ["| Variable | Flag | Default | Meaning |", "|---|---|---|---|"]
    for f in settings.fields():
        default = "(none)" if f.default == "" else f"`{f.default}`"
        flag = "env only (secret)" if f.metadata["secret"] else f"`{settings.flag_name(f.name)}`"
        rows.append(f"| `{settings.env_name(f.name)}` | {flag} | {default} | {f.metadata['help']} |")
    return "\n".join(rows)


def metrics_table() -> str:
    service = Service(Settings(secret_key="docs-only"))  # noqa: S106

    async def with_an_app() -> None:  # so the per-app series show their labels
        await service.store.register_apps([1400000000])
        await service.refresh_stats()

    asyncio.run(with_an_app())
    declared = {
        m._name: m._labelnames for m in vars(service.metrics).values() if isinstance(m, MetricWrapperBase)
    }
    rows = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for fam in service.metrics.registry.collect():
        if fam.name.startswith(("process_", "python_")):
            continue
        name = fam.name + ("_total" if fam.type == "counter" else "")
        labels = sorted(
            set(declared.get(fam.name, ()))
            | {k for s in fam.samples for k in s.labels if k not in ("le", "quantile")}
        )
        label_text = ", ".join(f"`{k}`" for k in labels) or "-"
        rows.append(f"| `{name}` | {fam.type} | {label_text} | {fam.documentation} |")
    return "\n".join(rows)


def render(key: str, text: str) -> str:
    """``text`` (the page of table ``key``) with that table as the code has it now."""
    marker = MARKERS[key]
    table = config_table() if key == "config" else metrics_table()
    pattern = re.compile(rf"(<!-- {marker}:start -->\n)(?:.*?\n)?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{PAGES[key].name} lacks the {marker} markers")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


if __name__ == "__main__":
    stale = []
    for key, page in PAGES.items():
        current = page.read_text()
        wanted = render(key, current)
        if "--write" in sys.argv:
            page.write_text(wanted)
        elif wanted != current:
            stale.append(str(page.relative_to(DOCS.parent)))
    if stale:
        raise SystemExit(f"{', '.join(stale)}: tables out of date: run `make docs`")
