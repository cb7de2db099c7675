"""`tick-exporter doctor`: diagnose the host and say, for each problem, what is wrong, why
it matters and the exact fix (docs/doctor.md).

Checks are small functions of what they read (points from the collectors, D-Bus unit
properties, paths under a proc or cgroup root), each returning a list of `Finding`s:
data, never printed by the check. exporter.doctor.run gathers the inputs and runs them;
render_text and render_json print the result. No check changes anything on the host.
"""

import json
from dataclasses import asdict, dataclass, field

# error: something is broken now; warning: a mistake that bites later (a reboot, a host
# that was off); info: worth knowing, nothing to do. Errors and warnings need attention.
SEVERITIES = ("error", "warning", "info")
NEEDS_ATTENTION = ("error", "warning")


@dataclass(frozen=True)
class Finding:
    id: str          # the kind of problem, stable for scripts: "timer-no-service", ...
    severity: str    # one of SEVERITIES
    subject: str     # what it is about: a unit, container names, a path
    problem: str     # what is wrong, with the values seen
    why: str         # why it matters
    fix: str         # the exact fix: commands, file contents, docker-compose lines


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)   # "timers: 5 on the system manager"
    skipped: list[str] = field(default_factory=list)   # "Docker: not enabled and not reachable"

    def extend(self, findings: list[Finding]) -> None:
        self.findings.extend(findings)


def exit_code(findings: list[Finding]) -> int:
    """1 when any finding needs attention (error or warning), else 0."""
    return 1 if any(f.severity in NEEDS_ATTENTION for f in findings) else 0


def ordered(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then info; the checks' own order within each."""
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def render_json(findings: list[Finding]) -> str:
    """A JSON list of findings, each {id, severity, subject, problem, why, fix}; [] when
    nothing was found. No trailing newline."""
    return json.dumps([asdict(f) for f in ordered(findings)], indent=2)


def _block(label: str, text: str) -> list[str]:
    """"  fix:     first line" and the following lines under it."""
    lines = text.splitlines() or [""]
    pad = " " * 11
    return [f"  {label + ':':<9}{lines[0]}".rstrip()] + [(pad + line).rstrip() for line in lines[1:]]


def render_text(report: Report) -> str:
    """Each finding as a block (severity, id, subject; problem, why, fix), then what was
    checked and skipped, then a one-line verdict. No trailing newline."""
    out = []
    for finding in ordered(report.findings):
        out.append(f"{finding.severity.upper()} {finding.id}: {finding.subject}")
        out += _block("problem", finding.problem) + _block("why", finding.why) + _block("fix", finding.fix)
        out.append("")
    out += [f"checked: {line}" for line in report.checked]
    out += [f"skipped: {line}" for line in report.skipped]
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in SEVERITIES}
    if exit_code(report.findings):
        parts = [f"{counts[s]} {s}{'' if counts[s] == 1 else 's'}" for s in NEEDS_ATTENTION if counts[s]]
        verdict = f"needs attention: {', '.join(parts)}"
    else:
        verdict = "no problems found"
    return "\n".join(out + ([""] if report.checked or report.skipped else []) + [verdict])
