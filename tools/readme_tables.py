"""Generates the README's configuration and metrics tables from the code.

`python tools/readme_tables.py --write` rewrites the tables in README.md between their markers;
tests/test_readme.py fails when the README and the code disagree.
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

README = Path(__file__).resolve().parent.parent / "README.md"
MARKERS = {"config": "config-table", "metrics": "metrics-table"}


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
    declared = {m._name: m._labelnames for m in vars(service.metrics).values()
                if isinstance(m, MetricWrapperBase)}
    rows = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for fam in service.metrics.registry.collect():
        if fam.name.startswith(("process_", "python_")):
            continue
        name = fam.name + ("_total" if fam.type == "counter" else "")
        labels = sorted(set(declared.get(fam.name, ())) |
                        {k for s in fam.samples for k in s.labels if k not in ("le", "quantile")})
        label_text = ", ".join(f"`{k}`" for k in labels) or "-"
        rows.append(f"| `{name}` | {fam.type} | {label_text} | {fam.documentation} |")
    return "\n".join(rows)


def render(text: str) -> str:
    for key, marker in MARKERS.items():
        table = config_table() if key == "config" else metrics_table()
        pattern = re.compile(rf"(<!-- {marker}:start -->\n)(?:.*?\n)?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md lacks the {marker} markers")
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    current = README.read_text()
    wanted = render(current)
    if "--write" in sys.argv:
        README.write_text(wanted)
    elif wanted != current:
        raise SystemExit("README.md tables are out of date: run `python tools/readme_tables.py --write`")
