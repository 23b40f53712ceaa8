"""What bash completion offers on a cardapctl command line: the completion script the
program prints (`cardapctl completion bash`, argcomplete), sourced in a real bash."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from testenv import need


def complete(ctl: Path, line: str, env: Mapping[str, str]) -> list[str]:
    """The candidates bash offers for `line` (TAB at its end), in the environment `env`
    (whose PATH must find `ctl`)."""
    need("bash")
    script = f"""
source <({shlex.quote(str(ctl))} completion bash)
COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_python_argcomplete cardapctl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    out = subprocess.run(["bash", "-c", script], env=dict(env), capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return [x.strip() for x in out.stdout.splitlines() if x.strip()]
