#!/usr/bin/env python3
"""Checks every `az ...` command in the deploy scripts against the installed Azure CLI's own help:
the command exists and each option it is given is one the command accepts. Needs no login and no
network (`az <command> --help` is local).

    python3 vm-image/azure/check-az-cli.py [--az PATH] [script.sh ...]

Default scripts: deploy.sh and deploy-ha.sh beside this file, docs/deploy-azure.md's code blocks.
The CLI can come from PyPI: python3 -m venv /tmp/azcli && /tmp/azcli/bin/pip install azure-cli.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GLOBAL = {"-o", "--output", "--only-show-errors", "--query", "--debug", "--verbose", "--subscription", "-h", "--help"}


def commands(text):
    """Yields (line number, tokens) of each az invocation, continuation lines joined."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        for m in re.finditer(r"(?:^|[\s(;|&])az\s+([^;|&)`]*)", line):
            chunk = m.group(1)
            chunk = re.sub(r"\$\([^)]*\)", "X", chunk)
            try:
                toks = shlex.split(chunk, comments=True)
            except ValueError:
                toks = chunk.split()
            if toks and re.match(r"^[a-z]", toks[0]):
                yield start + 1, toks


def main():
    args = sys.argv[1:]
    az = os.environ.get("AZ", "az")
    if args[:1] == ["--az"]:
        az, args = args[1], args[2:]
    files = [Path(a) for a in args] or [HERE / "deploy.sh", HERE / "deploy-ha.sh",
                                        HERE.parent.parent / "docs" / "deploy-azure.md"]
    env = dict(os.environ, AZURE_CORE_COLLECT_TELEMETRY="false", AZURE_CORE_NO_COLOR="true",
               AZURE_CORE_SURVEY_MESSAGE="false", AZURE_CONFIG_DIR=os.environ.get("AZURE_CONFIG_DIR", "/tmp/tollgate-azcli-config"))
    helps = {}
    errors = 0
    checked = 0
    for f in files:
        for lineno, toks in commands(f.read_text()):
            words = []
            for t in toks:
                if t.startswith("-") or not re.match(r"^[a-z][a-z0-9-]*$", t):
                    break
                words.append(t)
            opts = [t.split("=")[0] for t in toks if t.startswith("-") and not re.match(r"^-?\d", t)]
            # positional words after the command (e.g. "az vm boot-diagnostics enable") are part of it
            key = " ".join(words)
            if key not in helps:
                r = subprocess.run([az, *words, "--help"], capture_output=True, text=True, env=env)
                helps[key] = (r.returncode, r.stdout + r.stderr)
            rc, text = helps[key]
            if rc != 0 or "Arguments" not in text:
                print(f"{f.name}:{lineno}: az {key}: not a command ({text.strip().splitlines()[-1] if text.strip() else rc})")
                errors += 1
                continue
            for o in opts:
                if o in GLOBAL:
                    continue
                if not re.search(r"(?:^|[\s\[,])" + re.escape(o) + r"(?=[\s\]:,]|$)", text, re.M):
                    print(f"{f.name}:{lineno}: az {key}: unknown option {o}")
                    errors += 1
            checked += 1
    print(f"{checked} az invocations checked against {len(helps)} commands' help, {errors} problem(s)")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
