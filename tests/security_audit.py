"""The dependency audit: `pip-audit` over the venv, its result recorded for the reliability
document (`record("security", ...)`). Not a test: advisory databases change daily, so CI is
not gated on it. Run `python -m tests.security_audit` (needs `pip install pip-audit` and
network access to PyPI or OSV); docs/security.md explains every finding.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.reliability import record


def audit(service: str = "pypi") -> dict[str, Any]:
    """pip-audit's findings: packages audited and skipped, and every vulnerability."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        done = subprocess.run(
            [sys.executable, "-m", "pip_audit", "--vulnerability-service", service,
             "--format", "json", "--output", str(out), "--progress-spinner", "off"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if not out.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"service": service, "ran": False, "error": last[:300]}
        deps = json.loads(out.read_text())["dependencies"]
    skipped = [d["name"] for d in deps if "skip_reason" in d]
    vulns = [
        {"package": d["name"], "version": d["version"], "id": v["id"],
         "fix_versions": v.get("fix_versions", []), "aliases": v.get("aliases", [])}
        for d in deps for v in d.get("vulns", [])
    ]  # fmt: skip
    return {
        "service": service, "ran": True, "packages": len(deps),
        "audited": len(deps) - len(skipped), "skipped": len(skipped), "vulnerabilities": vulns,
    }  # fmt: skip


def main() -> int:
    results = [audit("pypi"), audit("osv")]
    for result in results:
        record("security", f"pip-audit ({result['service']})", result)
        print(json.dumps(result))
    audited = [r for r in results if r.get("ran") and r["audited"]]
    if not audited:
        print("nothing could be audited (no access to PyPI's or OSV's advisories)")
        return 2
    return 1 if any(r["vulnerabilities"] for r in audited) else 0


if __name__ == "__main__":
    sys.exit(main())
