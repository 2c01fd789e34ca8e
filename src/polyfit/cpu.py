"""This machine's CPU, in words: for the runs' tags and the gate's report. No torch."""

import platform
import re
from pathlib import Path


def cpu_description() -> dict[str, str]:
    """{'model': ..., 'vendor': ...} from /proc/cpuinfo (Linux), else what platform knows."""
    fields = {"model": platform.processor() or platform.machine(), "vendor": "unknown"}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for key, name in (("model", "model name"), ("vendor", "vendor_id")):
        if found := re.search(rf"^{name}\s*:\s*(.+)$", text, re.MULTILINE):
            fields[key] = found.group(1).strip()
    return fields


def this_cpu() -> str:
    """'model (vendor)' of this machine."""
    cpu = cpu_description()
    return f"{cpu['model']} ({cpu['vendor']})"
