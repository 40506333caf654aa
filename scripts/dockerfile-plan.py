#!/usr/bin/env python3
"""Reads the Dockerfile (with dockerfile-parse) for scripts/container-check.

Checks what the image must be (docs/container.md): a build stage that runs the release build,
a slim Debian runtime stage, a non-root USER, ports exposed, a HEALTHCHECK on readiness asked of
livechain itself, STOPSIGNAL SIGTERM, exec-form ENTRYPOINT, and COPY sources the .dockerignore
lets into the build context. Prints each failed rule and exits 1, or prints a shell fragment
that replays the stages for container-check: one function call per instruction, arguments
quoted, so the driver runs exactly what the Dockerfile says.

Usage: dockerfile-plan.py DOCKERFILE DOCKERIGNORE
"""

import json
import shlex
import sys

from dockerfile_parse import DockerfileParser


def stages(instructions):
    """Instructions grouped by FROM: [(from_value, [instruction, ...]), ...]."""
    out = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            out.append((ins["value"], []))
        elif out:
            out[-1][1].append(ins)
    return out


def exec_form(value):
    """The JSON array of an exec-form ENTRYPOINT/CMD, or None for shell form."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed) else None


def allowed_by_dockerignore(path, ignore_lines):
    """Whether a COPY source gets into the context: the file ignores everything (`*`) and lets
    in `!` entries, so the source must be one of them or under one."""
    allowed = [l[1:].rstrip("/") for l in ignore_lines if l.startswith("!")]
    path = path.rstrip("/").removeprefix("./")
    return any(path == a or path.startswith(a + "/") for a in allowed)


def main():
    dockerfile, dockerignore = sys.argv[1], sys.argv[2]
    parser = DockerfileParser(path=dockerfile)
    ignore = [
        l.strip()
        for l in open(dockerignore, encoding="utf-8")
        if l.strip() and not l.startswith("#")
    ]
    problems = []
    found = stages(parser.structure)
    if len(found) != 2:
        problems.append(f"expected two stages (build, runtime), found {len(found)}")
        print("\n".join(problems), file=sys.stderr)
        return 1
    (build_from, build), (run_from, run) = found
    if " AS " not in build_from.upper() or not build_from.lower().startswith("rust:"):
        problems.append(f"the build stage must be FROM rust:… AS build, is {build_from!r}")
    if not run_from.startswith("debian:") or "-slim" not in run_from:
        problems.append(f"the runtime stage must be FROM debian:…-slim, is {run_from!r}")
    build_runs = [i["value"] for i in build if i["instruction"] == "RUN"]
    if "cargo build --release --locked" not in build_runs:
        problems.append("the build stage must RUN cargo build --release --locked")

    def last(name):
        values = [i["value"] for i in run if i["instruction"] == name]
        return values[-1] if values else None

    user = last("USER")
    if user is None or user.split(":")[0] in ("0", "root"):
        problems.append(f"the runtime stage must run as a non-root USER, has {user!r}")
    exposed = " ".join(i["value"] for i in run if i["instruction"] == "EXPOSE").split()
    if "8545" not in exposed:
        problems.append(f"EXPOSE must include 8545, has {exposed}")
    if last("STOPSIGNAL") != "SIGTERM":
        problems.append(f"STOPSIGNAL must be SIGTERM, is {last('STOPSIGNAL')!r}")
    entrypoint = exec_form(last("ENTRYPOINT") or "")
    if entrypoint is None:
        problems.append("ENTRYPOINT must be exec form (a JSON array) so livechain is PID 1")
    cmd = exec_form(last("CMD") or "[]")
    if cmd is None:
        problems.append("CMD must be exec form (a JSON array)")
    healthcheck = last("HEALTHCHECK") or ""
    _, _, health_cmd = healthcheck.partition("CMD ")
    health = exec_form(health_cmd.strip())
    if health is None or not health[0].endswith("/livechain") or "health" not in health:
        problems.append(f"HEALTHCHECK must be CMD [\"…/livechain\", \"health\", …], is {healthcheck!r}")
    elif not any(a.endswith("/health/ready") for a in health):
        problems.append("HEALTHCHECK must ask /health/ready")

    lines = []
    for stage, instructions in (("build", build), ("runtime", run)):
        for ins in instructions:
            kind, value = ins["instruction"], ins["value"]
            if kind == "RUN":
                lines.append(f"{stage}_run {shlex.quote(value)}")
            elif kind == "COPY":
                words = shlex.split(value)
                from_stage = None
                if words[0].startswith("--from="):
                    from_stage = words.pop(0).split("=", 1)[1]
                *sources, dest = words
                for src in sources:
                    if from_stage is None and not allowed_by_dockerignore(src, ignore):
                        problems.append(f"COPY {src}: .dockerignore leaves it out of the context")
                    origin = from_stage or "context"
                    lines.append(
                        f"{stage}_copy {origin} {shlex.quote(src)} {shlex.quote(dest)}"
                    )
            elif kind in ("WORKDIR", "USER"):
                lines.append(f"{stage}_{kind.lower()} {shlex.quote(value)}")
    if entrypoint is not None and cmd is not None:
        lines.append("command_line=(" + " ".join(map(shlex.quote, entrypoint + cmd)) + ")")
    if health is not None:
        lines.append("healthcheck=(" + " ".join(map(shlex.quote, health)) + ")")
    lines.append(f"image_user={shlex.quote(user or '')}")
    lines.append("exposed=(" + " ".join(map(shlex.quote, exposed)) + ")")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
