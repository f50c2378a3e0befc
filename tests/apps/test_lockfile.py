"""requirements-lock.txt pins the tested dependency set: every distribution that segdcn's requirements pull
into this environment, transitive ones included, at the version installed here (`make install` installs with
the lock as pip constraints; `make lock` rewrites it). A dependency added or bumped without `make lock` fails here.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

import pytest

# packaging is a dependency of pytest, so it is there whenever this test runs
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT

LOCK = ROOT / "requirements-lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def lock_pins() -> dict[str, str]:
    """canonical name -> pinned version of each `name==version` line; other lines are comments."""
    pins = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{LOCK.name}:{number}: {line!r} is not a `name==version` pin"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{LOCK.name}:{number}: {match[1]} is pinned twice"
        pins[name] = match[2]
    return pins


def wanted(requirement: Requirement, extras: set[str]) -> bool:
    """Whether the requirement applies here, for a distribution installed with these extras."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def required_distributions(root: str, extras: set[str]) -> dict[str, metadata.Distribution]:
    """canonical name -> installed distribution of everything `root[extras]` requires, recursively."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(root, frozenset(extras))]
    while queue:
        name, name_extras = queue.pop()
        if (canonicalize_name(name), name_extras) in seen:
            continue
        seen.add((canonicalize_name(name), name_extras))
        dist = metadata.distribution(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if not wanted(requirement, set(name_extras)):
                continue
            try:
                required = metadata.distribution(requirement.name)
            except metadata.PackageNotFoundError:
                pytest.fail(f"{name} requires {requirement}, which is not installed: run `make install`")
            found[canonicalize_name(requirement.name)] = required
            queue.append((requirement.name, frozenset(canonicalize_name(e) for e in requirement.extras)))
    return found


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    assert LOCK.is_file(), f"{LOCK} is missing: `make lock` writes it"
    return lock_pins()


@pytest.fixture(scope="module")
def segdcn_extras() -> set[str]:
    try:
        dist = metadata.distribution("segdcn")
    except metadata.PackageNotFoundError:
        pytest.skip("segdcn is not installed in this environment (make install)")
    return set(dist.metadata.get_all("Provides-Extra") or [])  # make install asks for every extra (dev)


def test_the_lock_pins_every_installed_dependency_at_its_version(pins, segdcn_extras):
    torch_version = metadata.version("torch")
    if canonicalize_name("torch") in pins and pins["torch"] != torch_version:
        pytest.skip(
            f"torch {torch_version} is installed but the lock pins {pins['torch']}: "
            "this environment was not installed from the lock (make install)"
        )
    required = required_distributions("segdcn", segdcn_extras)
    assert {"torch", "numpy", "onnxruntime", "pytest"} <= set(required)  # the walk found the tree
    unpinned = sorted(f"{dist.metadata['Name']}=={dist.version}" for name, dist in required.items() if name not in pins)
    assert not unpinned, f"not in {LOCK.name}: {', '.join(unpinned)}; run `make lock`"
    wrong = sorted(
        f"{dist.metadata['Name']}: installed {dist.version}, locked {pins[name]}"
        for name, dist in required.items()
        if Version(pins[name]) != Version(dist.version)
    )
    assert not wrong, f"{LOCK.name} differs from this environment: {'; '.join(wrong)}; run `make lock`"
    assert "segdcn" not in pins  # the package itself is installed from the tree, not pinned


def test_the_lock_satisfies_pyproject_and_the_makefiles_torch(pins):
    """pyproject.toml's requirements (read from the file, so a new one fails before any reinstall) are pinned
    within their ranges, and torch/torchvision at the Makefile's TORCH pins."""
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in project.get("optional-dependencies", {}).values() for r in extra]
    for requirement in declared:
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"pyproject.toml requires {requirement}, which {LOCK.name} does not pin: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )
    makefile = (ROOT / "Makefile").read_text()
    torch_line = re.search(r"^TORCH\s*:=(.*)$", makefile, re.MULTILINE)
    assert torch_line, "the Makefile's TORCH := ... line is gone"
    for pin in torch_line[1].split():
        name, version = pin.split("==")
        assert pins.get(canonicalize_name(name)) == version, f"Makefile installs {pin}, {LOCK.name} pins another"


def test_the_lock_says_what_it_is():
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "make lock" in text and re.search(r"Python \d+\.\d+\.\d+", text), text
