"""The operator image's Dockerfile and build context, read offline.

There is no Docker engine on these machines: ``tests/e2e/test_image.py`` runs hadolint and installs
the image's exact dependency set into a virtualenv; these tests pin the promises the Dockerfile
makes (pinned base, locked dependencies, non-root, probes) and that its build context holds what it
copies.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf = f"{buf} {line}" if buf else line
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        word, _, args = buf.partition(" ")
        out.append((word.upper(), args.strip()))
        buf = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def base_image() -> str:
    args = [a for w, a in instructions() if w == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert len(args) == 1, "the base image is one ARG shared by both stages"
    return args[0].split("=", 1)[1]


def run_commands(stage: list[tuple[str, str]]) -> list[str]:
    return [cmd.strip() for w, a in stage if w == "RUN" for cmd in a.split("&&")]


def test_base_image_is_python_3_11_slim_pinned_by_a_full_version_tag() -> None:
    image = base_image()
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), image


def test_the_image_is_multi_stage_and_both_stages_use_the_pinned_base() -> None:
    froms = [a for w, a in instructions() if w == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]


def test_builder_installs_the_makefiles_uv_version_from_pypi() -> None:
    makefile_version = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_version
    builder = stages()[0]
    assert ("ARG", f"UV_VERSION={makefile_version.group(1)}") in builder
    assert 'pip install --no-cache-dir "uv==${UV_VERSION}"' in run_commands(builder)


def test_dependencies_come_from_the_lockfile_for_the_operator_package_only() -> None:
    commands = run_commands(stages()[0])
    export = next(c for c in commands if c.startswith("uv export"))
    argv = shlex.split(export)
    for flag in ("--frozen", "--no-dev", "--no-emit-workspace"):
        assert flag in argv
    assert argv[argv.index("--package") + 1] == "chatmemory-operator"
    install = next(c for c in commands if "-r requirements.txt" in c)
    assert "--require-hashes" in shlex.split(install)
    assert "uv pip install --python /opt/venv/bin/python --no-deps ./sdk ./operator" in commands


def test_the_final_stage_runs_as_uid_10001_and_copies_only_the_virtualenv() -> None:
    final = stages()[-1]
    users = [a for w, a in final if w == "USER"]
    assert users == ["10001:10001"]
    copies = [a for w, a in final if w == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert any("useradd" in c and "--uid 10001" in c for c in run_commands(final))


def test_the_final_stage_exposes_the_probe_and_metrics_ports() -> None:
    exposed = [p for w, a in stages()[-1] if w == "EXPOSE" for p in a.split()]
    assert sorted(exposed) == ["8080", "9090"]


def cmd() -> list[str]:
    cmds = [a for w, a in stages()[-1] if w == "CMD"]
    assert len(cmds) == 1
    argv: list[str] = json.loads(cmds[0])  # exec form: the operator is PID 1 and gets SIGTERM
    return argv


def test_cmd_runs_the_operator_package_under_kopf_standalone_with_the_liveness_endpoint() -> None:
    argv = cmd()
    assert argv[:2] == ["kopf", "run"]
    assert "--module=chatmemory_operator" in argv
    assert "--standalone" in argv  # one replica, no peering objects
    assert "--all-namespaces" in argv
    assert "--liveness=http://0.0.0.0:8080/healthz" in argv


def test_the_runtime_never_writes_bytecode_and_uses_tmp_for_temp_files() -> None:
    env = " ".join(a for w, a in stages()[-1] if w == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "TMPDIR=/tmp" in env
    assert "PATH=/opt/venv/bin:$PATH" in env


def test_the_runtime_caps_malloc_arenas() -> None:
    """bench/operator_scale.py reads this ENV and runs the operator with it, as the image does."""
    env = " ".join(a for w, a in stages()[-1] if w == "ENV")
    assert "MALLOC_ARENA_MAX=2" in env


def dockerignore_excludes(path: str) -> bool:
    """Docker's rules: the last matching pattern wins; ``!`` re-includes."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        candidates = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
        if any(
            fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) for c in candidates
        ):
            excluded = not negate
    return excluded


def copied_sources() -> list[str]:
    sources: list[str] = []
    for word, args in stages()[0]:
        if word == "COPY" and not args.startswith("--from"):
            *srcs, _dest = args.split()
            sources += srcs
    return sources


def test_every_file_the_builder_copies_exists_and_is_in_the_build_context() -> None:
    sources = copied_sources()
    assert {"uv.lock", "sdk/src", "operator/src", "operator/pyproject.toml"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not dockerignore_excludes(src), f"{src} is excluded by .dockerignore"


def test_the_build_context_leaves_out_the_venv_platform_state_tests_and_git() -> None:
    for path in (".venv/bin/python", ".platform/env", "tests/conftest.py", ".git/HEAD", "README.md"):
        assert dockerignore_excludes(path), path
    assert dockerignore_excludes("operator/src/chatmemory_operator/__pycache__/x.pyc")
