"""Local bundling of the Lambda code, without Docker.

The bundle is the one asset every function shares: ``seg_contract/`` and ``lambdas/``
plus the wheels of ``[project].dependencies`` and ``[project.optional-dependencies].lambda``
from ``pyproject.toml`` (the one definition of what the functions need). Wheels are
installed by pip for the target platform (``--only-binary=:all:``), cached under
``~/.cache/seg/lambda-deps/<key>`` keyed by the dependency list and the platform, so a
second synth only copies files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from cdk.config import BundleTarget

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_PACKAGES = ("seg_contract", "lambdas")
LAMBDA_PYTHON = "3.13"  # keep equal to RUNTIME below
RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")


class BundlingError(RuntimeError):
    """The Lambda bundle could not be built (bad pyproject.toml, pip failure)."""


def lambda_dependencies(pyproject: Path = REPO_ROOT / "pyproject.toml") -> tuple[str, ...]:
    """The requirement strings the functions need, read from pyproject.toml."""
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
        extra = project["optional-dependencies"]["lambda"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise BundlingError(f"cannot read the lambda extra from {pyproject}: {exc}") from exc
    return tuple(project.get("dependencies", [])) + tuple(extra)


@dataclass(frozen=True)
class PipTarget:
    """Where the wheels must run: pip's platform flags, or none for this interpreter."""

    name: str
    pip_flags: tuple[str, ...]

    @classmethod
    def for_bundle(cls, target: BundleTarget) -> PipTarget:
        if target is BundleTarget.HOST:
            host = f"host-{sysconfig.get_platform()}-py{sys.version_info[0]}.{sys.version_info[1]}"
            return cls(host, ("--only-binary=:all:",))
        return cls(
            f"lambda-manylinux2014_aarch64-py{LAMBDA_PYTHON}",
            (
                "--platform",
                "manylinux2014_aarch64",
                "--implementation",
                "cp",
                "--python-version",
                LAMBDA_PYTHON,
                "--only-binary=:all:",
            ),
        )


def dependency_key(deps: tuple[str, ...], target: PipTarget) -> str:
    payload = json.dumps({"deps": sorted(deps), "target": target.name})
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _cache_root() -> Path:
    if override := os.environ.get("SEG_BUNDLE_CACHE"):
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "seg" / "lambda-deps"


def installed_dependencies(deps: tuple[str, ...], target: PipTarget) -> Path:
    """A directory holding ``deps`` installed for ``target`` (pip runs on a cache miss)."""
    cache = _cache_root() / dependency_key(deps, target)
    if (cache / ".complete").exists():
        return cache
    staging = cache.with_name(cache.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        *target.pip_flags,
        "--target",
        str(staging),
        *deps,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundlingError(
            f"pip could not install the Lambda dependencies for {target.name}:\n{result.stderr}"
        )
    (staging / ".complete").write_text(" ".join(deps))
    # Another synth (a parallel test run) may have filled the cache meanwhile: keep the
    # first complete copy and never delete one that someone may be reading.
    if (cache / ".complete").exists():
        shutil.rmtree(staging, ignore_errors=True)
        return cache
    shutil.rmtree(cache, ignore_errors=True)  # an incomplete leftover
    try:
        staging.rename(cache)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (cache / ".complete").exists():
            raise
    return cache


def source_hash(root: Path = REPO_ROOT) -> str:
    """A hash of the code that goes into the bundle (the asset changes when it does)."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    """Builds the bundle in ``output_dir`` with pip and file copies (no Docker)."""

    def __init__(self, root: Path, deps: tuple[str, ...], target: PipTarget) -> None:
        self._root = root
        self._deps = deps
        self._target = target

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_: object) -> bool:
        out = Path(output_dir)
        site = installed_dependencies(self._deps, self._target)
        shutil.copytree(site, out, dirs_exist_ok=True, ignore=_IGNORED)
        (out / ".complete").unlink(missing_ok=True)
        for package in SOURCE_PACKAGES:
            shutil.copytree(self._root / package, out / package, ignore=_IGNORED)
        return True


def lambda_code(target: BundleTarget, root: Path = REPO_ROOT) -> lambda_.Code:
    """The one code asset shared by every function of the stack."""
    deps = lambda_dependencies(root / "pyproject.toml")
    pip_target = PipTarget.for_bundle(target)
    asset_hash = hashlib.sha256(
        f"{source_hash(root)}:{dependency_key(deps, pip_target)}".encode()
    ).hexdigest()
    return lambda_.Code.from_asset(
        str(root / "lambdas"),  # never read: local bundling builds the bundle
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=asset_hash,
        bundling=BundlingOptions(
            # Only used if local bundling declined, which it never does.
            image=RUNTIME.bundling_image,
            local=LocalPythonBundling(root, deps, pip_target),
        ),
    )
