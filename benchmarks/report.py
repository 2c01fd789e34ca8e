"""Render the results as BENCHMARKS.md."""

from timing import Section


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return lines


def render(run_facts: dict[str, str], machine: dict[str, str], sections: list[Section]) -> str:
    """The whole report: how it was run, the machine, then one table per section."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python benchmarks/run.py --output BENCHMARKS.md`), which",
        "rewrites this file; speed is checked here, not in timed tests. Figures are medians;",
        "each section says how many runs. Ratios are against floors measured in the same rounds,",
        "so they carry across machines and loads; seconds do not.",
        "",
        *[f"- {label}: {value}" for label, value in run_facts.items()],
        "",
        "## Machine",
        "",
        *_table(["", ""], [[label, value] for label, value in machine.items()]),
    ]
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        rows = [[r.measure, r.value, r.target, r.verdict] for r in section.rows]
        if rows:
            lines += [*_table(["measure", "median", "target", "verdict"], rows), ""]
        if section.table:
            lines += [*_table(*section.table), ""]
        lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines) + "\n"
