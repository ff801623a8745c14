"""The container image, for real: the Dockerfile built by `make image` (buildah), then run the
way the image says (its entrypoint, its command, its user) and driven over HTTP on loopback.

No registry is reachable here and there is no Docker daemon, so the base image is made from
Debian packages: `debootstrap --variant=minbase` with python3 and python3-venv, given this
machine's CA bundle and pip settings so that pip and uv inside the build reach the package
index through the same TLS proxy as the host. buildah runs as root without a daemon, on the
`vfs` storage driver with `chroot` isolation, in a storage of its own under
~/.cache/gme-recwatch-image ($GME_RECWATCH_IMAGE_CACHE), where the base is kept between runs:
it is made again only when its recipe, the mirror, the CA bundle or the pip settings change.

Skipped without buildah, debootstrap or root, except under CI=true, where it must run.
Set ``GME_RECWATCH_FIGURES=<path>`` to append the times and sizes quoted in docs/container-image.md.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, RedisServer, S3Server, figures_writer, in_ci, metric_value, require_tool

from gme_recwatch.signature import sign

from .conftest import SECRET, callback_body, free_port

# Longer than the suite's per-test limit (pyproject.toml): whichever test of the module comes
# first builds the image in its setup, 60-180 s with the base cached, and a cold base is first
# made with debootstrap (minutes more, 20 at most: its own timeout); a rebuild follows.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# The base: what a python:3.x-slim image offers the Dockerfile, made from Debian packages.
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
RECIPE = 1  # bump when make_base() changes what it puts in the base
BASE_REPO = "localhost/gme-recwatch-test-base"
IMAGE = "localhost/gme-recwatch-test"
BUNDLE_IN_BASE = "/etc/ssl/certs/ca-certificates.crt"
STATE_DIR = "var/lib/gme-recwatch"
SBOM = "usr/share/doc/gme-recwatch/sbom.cdx.json"

FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield from figures_writer("test_image", FIGURES)


# ------------------------------------------------------------------ buildah, in a storage of its own


class Buildah:
    """buildah on the vfs driver with chroot isolation, in its own storage under `cache`."""

    def __init__(self, binary: str, cache: Path) -> None:
        self.binary = binary
        cache.mkdir(parents=True, exist_ok=True)
        conf = cache / "storage.conf"
        conf.write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{cache / "storage"}"\nrunroot = "{cache / "run"}"\n'
        )
        # Read by every buildah this process starts, `make image` included.
        self.env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf), "BUILDAH_ISOLATION": "chroot"}

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        proc = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc.stdout.strip()

    def inspect_image(self, image: str) -> dict[str, Any] | None:
        out = subprocess.run(
            [self.binary, "inspect", "--type", "image", image],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return json.loads(out.stdout) if out.returncode == 0 else None

    def images(self, repo: str) -> list[str]:
        """Every name:tag in the storage under `repo`."""
        listing = json.loads(self("images", "--json") or "[]")
        return [n for img in listing for n in img.get("names") or [] if n.startswith(repo + ":")]


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "debootstrap and buildah's vfs/chroot storage need root"
    if in_ci():
        pytest.fail(f"{reason}; CI=true so this test must not skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def buildah() -> Buildah:
    binary = require_tool("buildah")
    require_tool("debootstrap")
    _require_root()
    cache = Path(
        os.environ.get("GME_RECWATCH_IMAGE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gme-recwatch-image"
    )
    return Buildah(binary, cache)


# ------------------------------------------------------------------ what the host knows


def debian_mirror() -> str:
    """The Debian mirror apt uses here ($GME_RECWATCH_DEBIAN_MIRROR wins)."""
    if os.environ.get("GME_RECWATCH_DEBIAN_MIRROR"):
        return os.environ["GME_RECWATCH_DEBIAN_MIRROR"]
    uris: list[str] = []
    apt = Path("/etc/apt")
    for f in sorted(apt.glob("sources.list.d/*.sources")):
        uris += [u for line in f.read_text().splitlines() if line.startswith("URIs:") for u in line.split()[1:]]
    for f in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if f.exists():
            uris += re.findall(r"(?m)^deb\s+(?:\[[^]]*\]\s+)?(\S+)", f.read_text())
    for uri in uris:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    return "http://deb.debian.org/debian"


def host_pip_settings() -> tuple[bytes, dict[str, str]]:
    """The CA bundle pip trusts here, and the pip settings that say how to reach the index.

    Settings that name this machine's files (find-links, constraints, file:// indexes) are left
    out: the base could not see them."""
    cfg = configparser.ConfigParser()
    files = [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        Path.home() / ".pip/pip.conf",
        Path.home() / ".config/pip/pip.conf",
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    cfg.read([f for f in files if f.is_file()])
    found: dict[str, str] = {}
    for section in ("global", "install"):
        if cfg.has_section(section):
            found.update(cfg.items(section))
    for key in ("index-url", "extra-index-url", "trusted-host", "cert"):
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            found[key] = env
    settings = {}
    for key in ("index-url", "extra-index-url"):
        urls = [u for u in found.get(key, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            settings[key] = " ".join(urls)
    if found.get("trusted-host"):
        settings["trusted-host"] = found["trusted-host"]
    candidates = [
        found.get("cert"),
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    bundle = next(Path(c) for c in candidates if c and Path(c).is_file())
    return bundle.read_bytes(), settings


def _tree_bytes(root: Path) -> int:
    """Apparent size of every regular file under `root` (what an uncompressed layer holds)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


# ------------------------------------------------------------------ the base, kept between runs


@pytest.fixture(scope="module")
def base_image(buildah: Buildah, tmp_path_factory: pytest.TempPathFactory) -> str:
    mirror = debian_mirror()
    bundle, pip_settings = host_pip_settings()
    pip_conf = (
        "[global]\ncert = "
        + BUNDLE_IN_BASE
        + "\n"
        + "".join(f"{k} = {v}\n" for k, v in sorted(pip_settings.items()))
    )
    env = {"SSL_CERT_FILE": BUNDLE_IN_BASE}
    if "index-url" in pip_settings:  # uv reads no pip.conf
        env["UV_DEFAULT_INDEX"] = pip_settings["index-url"].split()[0]
    recipe = json.dumps([RECIPE, SUITE, PACKAGES, mirror, hashlib.sha256(bundle).hexdigest(), pip_conf, env])
    name = f"{BASE_REPO}:{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"
    if buildah.inspect_image(name) is not None:
        FIGURES.update(base_cached=True, base_seconds=0.0)
        return name
    for old in buildah.images(BASE_REPO):  # a recipe that changed: its base is of no more use
        buildah("rmi", old, check=False)

    started = time.monotonic()
    rootfs = tmp_path_factory.mktemp("base") / "rootfs"
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE, str(rootfs), mirror],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, f"debootstrap from {mirror} failed:\n{proc.stdout[-3000:]}"
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / junk).glob("*"):
            if entry.is_file():
                entry.unlink()
    (rootfs / BUNDLE_IN_BASE.lstrip("/")).write_bytes(bundle)
    (rootfs / "etc/pip.conf").write_text(pip_conf)
    size = _tree_bytes(rootfs)
    ctr = buildah("from", "scratch")
    try:
        mnt = buildah("mount", ctr)
        subprocess.run(["cp", "-a", f"{rootfs}/.", mnt], check=True)
        buildah("umount", ctr)
        config = [
            "config",
            "--cmd",
            "/bin/bash",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--label",
            f"io.gme-recwatch.test-base.bytes={size}",
        ]
        for k, v in env.items():
            config += ["--env", f"{k}={v}"]
        buildah(*config, ctr)
        buildah("commit", "--quiet", ctr, name)
    finally:
        buildah("rm", ctr, check=False)
        shutil.rmtree(rootfs, ignore_errors=True)
    FIGURES.update(base_cached=False, base_seconds=round(time.monotonic() - started, 1))
    return name


# ------------------------------------------------------------------ the image, built by `make image`


def make_image(buildah: Buildah, base: str, tag: str) -> str:
    """`make image` on `base`, every step built again (no layer of an earlier build reused); the
    image ID."""
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "image",
            "ENGINE=buildah",
            f"BASE={base}",
            f"IMAGE={tag}",
            "NO_CACHE=1",
        ],
        cwd=ROOT,
        env=buildah.env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, f"make image failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-3000:]}"
    assert f"built {tag}" in proc.stdout
    info = buildah.inspect_image(tag)
    assert info is not None
    return str(info["FromImageID"])


@dataclass
class Image:
    tag: str
    id: str
    config: dict[str, Any]


@pytest.fixture(scope="module")
def image(buildah: Buildah, base_image: str) -> Iterator[Image]:
    for stale in buildah.images(IMAGE):  # left by a run that was killed: free the disk
        buildah("rmi", "--force", stale, check=False)
    tag = f"{IMAGE}:{os.getpid()}"
    started = time.monotonic()
    image_id = make_image(buildah, base_image, tag)
    FIGURES["build_seconds"] = round(time.monotonic() - started, 1)
    info = buildah.inspect_image(tag)
    assert info is not None
    yield Image(tag, image_id, info["OCIv1"]["config"])
    for name in buildah.images(IMAGE):
        buildah("rmi", "--force", name, check=False)
    # the builder's layers (a full copy of its root each, on vfs); the tagged base stays
    buildah("rmi", "--prune", check=False)


@dataclass
class Container:
    name: str
    rootfs: Path


@pytest.fixture(scope="module")
def container(buildah: Buildah, image: Image) -> Iterator[Container]:
    """A container of the image, its root filesystem mounted for the tests to look at (one for
    the module: with vfs, each container is a full copy of the image)."""
    name = buildah("from", "--pull=never", image.tag)
    try:
        yield Container(name, Path(buildah("mount", name)))
    finally:
        buildah("rm", name, check=False)


def run_python(
    buildah: Buildah, container: Container, script: str, *args: str, env: dict[str, str] | None = None
) -> str:
    """`python -B -c script args...` in the container, as the image's user; its output."""
    argv = ["run"]
    for k, v in (env or {}).items():
        argv += ["--env", f"{k}={v}"]
    return buildah(*argv, container.name, "--", "python", "-B", "-c", script, *args)


# ------------------------------------------------------------------ the image as it is


def test_image_runs_serve_as_uid_10001_from_its_state_directory(image: Image) -> None:
    c = image.config
    assert c["User"] == "10001:10001"
    assert c["Entrypoint"] == ["gme-recwatch"] and c["Cmd"] == ["serve"]
    assert set(c["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    assert c["WorkingDir"] == "/" + STATE_DIR
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env["GME_RECWATCH_STATE_FILE"] == f"/{STATE_DIR}/state.snapshot"
    assert env["PATH"].startswith("/opt/venv/bin:")


def _image_size(buildah: Buildah, tag: str) -> float:
    """The image's size in bytes as `buildah images` reports it: its layers, uncompressed, in
    decimal units ("93.9 MB")."""
    listing = json.loads(buildah("images", "--json", tag))
    m = re.fullmatch(r"([\d.]+)\s*(B|kB|KB|MB|GB)", str(listing[0]["size"]))
    assert m, listing[0]["size"]
    return float(m[1]) * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[m[2]]


def _tar_bytes(root: Path, paths: list[Path]) -> int:
    """The size of an uncompressed layer holding `paths` (and whatever is under them)."""

    class Counter:
        n = 0

        def write(self, b: bytes) -> int:
            self.n += len(b)
            return len(b)

    out = Counter()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
        for p in paths:
            tar.add(p, arcname=str(p.relative_to(root)))
    return out.n


def _layer_split(root: Path) -> dict[str, int]:
    """The final stage's three layers as docker makes them (Dockerfile: runtime, deps, app;
    buildah without --layers makes one of the three): rebuilt from the files they hold."""
    site = next((root / "opt/venv/lib").glob("python3.*/site-packages"))
    ours = [*site.glob("gme_recwatch*"), root / SBOM]
    runtime = [p for p in root.iterdir() if p.name not in ("opt", "proc", "sys", "dev", "run")]
    deps = [
        p
        for p in (root / "opt").rglob("*")
        if not p.is_dir() and not any(p == o or o in p.parents for o in ours)
    ]
    return {
        "runtime": _tar_bytes(root, runtime) - _tar_bytes(root, [root / SBOM]),
        "deps": _tar_bytes(root, deps),
        "app": _tar_bytes(root, ours),
    }


# The final stage holds no program but the interpreter.
PROGRAM_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin")
STDLIB_CUT = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "distutils", "venv")


def test_image_has_no_shell_no_package_manager_no_pip_and_is_under_120_mb(
    buildah: Buildah, image: Image, container: Container
) -> None:
    root = container.rootfs
    programs = sorted(
        f"{d}/{p.name}"
        for d in PROGRAM_DIRS
        if (root / d).is_dir() and not (root / d).is_symlink()
        for p in (root / d).iterdir()
    )
    assert programs and all(re.fullmatch(r"[\w/]+/python3(\.\d+)?", p) for p in programs), programs
    for shell in ("sh", "bash", "dash", "ash", "busybox"):
        for d in PROGRAM_DIRS:
            assert not (root / d / shell).exists(), f"/{d}/{shell} is in the image"
    for gone in ("var/lib/dpkg", "var/lib/apt", "etc/apt", "src", "dist", "opt/uv", "root/.cache"):
        assert not (root / gone).exists(), f"/{gone} is in the image"
    assert sorted((root / "opt/venv/bin").iterdir()) == sorted(
        p for p in (root / "opt/venv/bin").iterdir() if re.fullmatch(r"python[\d.]*|gme-recwatch", p.name)
    )
    site = next((root / "opt/venv/lib").glob("python3.*/site-packages"))
    stdlib = next(p.parent for p in root.glob("usr/*lib/python3.*/os.py"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    for unwanted in ("pip", "setuptools", "wheel", "faker", "polyfactory", "rich", "pygments"):
        assert unwanted not in installed, f"{unwanted} is installed"
    assert not list(stdlib.glob("site-packages/*")) and not list(stdlib.glob("dist-packages/*"))
    assert [d for d in STDLIB_CUT if (stdlib / d).exists()] == []
    assert (site / "gme_recwatch/__init__.py").is_file()  # installed, not a link to a source tree
    assert not list(site.glob("*.pth")), "an editable install leaves a .pth file"
    ours = [p for p in site.rglob("*") if p.name in ("conftest.py", "e2e") or "tests/golden" in str(p)]
    assert ours == []
    assert list(site.glob("*/uv_cache.json")) == []  # build-time file times, which differ every build
    botocore_models = sorted(p.name for p in (site / "botocore/data").iterdir() if p.is_dir())
    assert botocore_models == ["s3"]

    size = _image_size(buildah, image.tag)
    layers = _layer_split(root)
    FIGURES.update(
        image_size=size,
        layer_sizes=layers,
        files_bytes=_tree_bytes(root),
        venv_bytes=_tree_bytes(root / "opt/venv"),
        stdlib_bytes=_tree_bytes(stdlib),
    )
    # a new commit changes a small layer only; the three hold the image (tar headers aside)
    assert layers["app"] < 3_000_000, layers
    assert abs(sum(layers.values()) - size) < 0.05 * size, (layers, size)
    assert size < 120_000_000, f"the image is {size / 1e6:.1f} MB"


def test_every_shared_object_loads_and_none_carries_debug_symbols(
    buildah: Buildah, container: Container
) -> None:
    """Every library the image ships loads in it: whatever one links against is there too."""
    root = container.rootfs
    shared = sorted(
        "/" + str(p.relative_to(root))
        for top in ("usr", "opt", "lib", "lib64")
        if (root / top).is_dir() and not (root / top).is_symlink()
        for p in (root / top).rglob("*.so*")
        if p.is_file() and not p.is_symlink() and p.read_bytes()[:4] == b"\x7fELF"
    )
    assert len(shared) > 50
    script = (
        "import ctypes, json, sys\n"
        "bad = {}\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        ctypes.CDLL(path)\n"
        "    except OSError as exc:\n"
        "        bad[path] = str(exc)\n"
        "print(json.dumps(bad))\n"
    )
    loader = [p for p in shared if "/ld-linux" in p]
    out = run_python(buildah, container, script, json.dumps([p for p in shared if p not in loader]))
    assert json.loads(out.splitlines()[-1]) == {}
    readelf = shutil.which("readelf")
    if readelf is None:
        if in_ci():
            pytest.fail("readelf (binutils) is needed; CI=true so this test must not skip", pytrace=False)
        pytest.skip("readelf (binutils) is not installed")
    debug = []
    for path in shared:
        sections = subprocess.run(
            [readelf, "-S", "-W", str(root / path.lstrip("/"))], capture_output=True, text=True, check=True
        ).stdout
        if re.search(r"\s\.(debug_\w+|symtab)\s", sections):
            debug.append(path)
    assert debug == []


def test_every_module_has_bytecode_and_its_source(container: Container) -> None:
    """The root filesystem is read-only when it runs, so a module without bytecode in the image
    is compiled again at every import; the sources stay, for tracebacks."""
    root = container.rootfs
    sources = [
        p
        for top in ("usr", "opt")
        for p in (root / top).rglob("*.py")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert len(sources) > 1000
    tag = next((root / "opt/venv/lib").glob("python3.*")).name.replace("python3.", "cpython-3")
    missing = [str(p) for p in sources if not (p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").is_file()]
    assert missing == []
    orphans = [
        str(p)
        for p in root.rglob("__pycache__/*.pyc")
        if not (p.parent.parent / (p.name.split(".")[0] + ".py")).exists()
    ]
    assert orphans == []


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_sbom_lists_every_python_distribution_and_the_debian_packages(container: Container) -> None:
    root = container.rootfs
    sbom = json.loads((root / SBOM).read_text())
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.5")
    epoch = subprocess.run(
        ["git", "log", "-1", "--format=%ct"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert sbom["metadata"]["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))
    comps = sbom["components"]
    for c in comps:
        assert c["purl"].endswith("@" + c["version"]) or "@" + c["version"] + "?" in c["purl"], c
    site = next((root / "opt/venv/lib").glob("python3.*/site-packages"))
    installed = set()
    for meta in site.glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1) for line in meta.read_text().split("\n\n")[0].splitlines() if ": " in line
        )
        installed.add((_norm(fields["Name"]), fields["Version"]))
    listed = {(_norm(c["name"]), c["version"]) for c in comps if c["purl"].startswith("pkg:pypi/")}
    assert listed == installed
    assert ("gme-recwatch", sbom["metadata"]["component"]["version"]) in listed
    debs = {c["name"] for c in comps if c["purl"].startswith("pkg:deb/")}
    # the C library, OpenSSL and the interpreter (from Debian here; python:3.x-slim builds its own)
    assert {"libc6", "libssl3"} <= debs, debs
    assert any(re.fullmatch(r"(lib)?python3\.\d+(-minimal|-stdlib)?", d) for d in debs), debs
    assert not debs & {"bash", "dash", "apt", "dpkg", "coreutils"}, debs


def test_nothing_the_service_imports_was_removed(buildah: Buildah, container: Container) -> None:
    """In the image: every module of the project, and every module any of them imports (at the
    top or inside a function, as the COS and tracing paths do), imports; `serve --check`
    builds both apps and their OpenAPI schemas."""
    script = (
        "import ast, importlib, json, os, pkgutil, sys\n"
        "import gme_recwatch\n"
        "names = {'gme_recwatch.cli'}\n"
        "for m in pkgutil.walk_packages(gme_recwatch.__path__, 'gme_recwatch.'):\n"
        "    names.add(m.name)\n"
        "    source = importlib.util.find_spec(m.name).origin\n"
        "    for node in ast.walk(ast.parse(open(source).read())):\n"
        "        if isinstance(node, ast.Import):\n"
        "            names.update(a.name for a in node.names)\n"
        "        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:\n"
        "            names.add(node.module)\n"
        "skip = {'types_aiobotocore_s3'}  # typing only (under TYPE_CHECKING): the dev group's\n"
        "failed = {}\n"
        "for name in sorted(names - skip):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        failed[name] = repr(exc)\n"
        "from gme_recwatch.cli import main\n"
        "assert main(['serve', '--check']) == 0\n"
        "print(json.dumps({'modules': len(names), 'failed': failed}))\n"
    )
    out = run_python(buildah, container, script, env={"GME_RECWATCH_SECRET_KEY": SECRET})
    assert "the configuration is valid" in out
    result = json.loads(out.splitlines()[-1])
    assert result["failed"] == {}
    assert result["modules"] > 60
    FIGURES["modules_imported"] = result["modules"]


def test_serve_check_online_in_the_image_reaches_redis_and_cos(
    buildah: Buildah, container: Container, s3_server: S3Server, redis_server: RedisServer
) -> None:
    """`serve --check --online` (the chart's pre-install check) from the image, against a real
    redis-server and a real S3 server on loopback: every module of both paths is there."""
    bucket = s3_server.bucket(f"gme-image-{uuid.uuid4().hex[:10]}")
    key_id, secret = s3_server.keys["reader"]
    env = {
        "GME_RECWATCH_SECRET_KEY": SECRET,
        # the image's snapshot file goes with the in-memory store only (as the chart sets it)
        "GME_RECWATCH_STATE_FILE": "",
        "GME_RECWATCH_REDIS_URL": redis_server.url,
        "GME_RECWATCH_REDIS_PREFIX": f"image-{uuid.uuid4().hex[:8]}:",
        "GME_RECWATCH_COS_BUCKET": bucket,
        "GME_RECWATCH_COS_REGION": s3_server.REGION,
        "GME_RECWATCH_COS_ENDPOINT": s3_server.url,
        "TENCENTCLOUD_SECRET_ID": key_id,
        "TENCENTCLOUD_SECRET_KEY": secret,
    }
    argv = ["run"]
    for k, v in env.items():
        argv += ["--env", f"{k}={v}"]
    out = buildah(*argv, container.name, "--", "gme-recwatch", "serve", "--check", "--online")
    assert "store     : redis://127.0.0.1" in out, out
    assert f"COS       : {bucket} in {s3_server.REGION}" in out and "reachable" in out, out
    assert "everything it names answers" in out, out


def test_the_image_looks_a_recording_up_in_cos(
    buildah: Buildah, container: Container, s3_server: S3Server
) -> None:
    """The image keeps botocore's S3 model only: a lookup from inside it, against a real S3
    server (moto) on loopback, finds a file that is there and not one that is not."""
    bucket = f"gme-image-{uuid.uuid4().hex[:10]}"
    present = "1400000000_100_999/2023-02-09-16-16-45_446946705284000000_audio.mp3"
    s3_server.bucket(bucket, {present: b"12345"})
    key_id, secret = s3_server.keys["reader"]
    script = (
        "import asyncio, sys\n"
        "from gme_recwatch.cos import CosChecker, CosConfig, Credentials\n"
        "region, bucket, url, key_id, secret, present = sys.argv[1:]\n"
        "config = CosConfig(region=region, default_bucket=bucket, endpoint=url,\n"
        "                   credentials=Credentials(key_id, secret))\n"
        "async def look():\n"
        "    async with CosChecker(config) as checker:\n"
        "        for name in (present, 'absent.mp3'):\n"
        "            print(type(await checker.check(1400000000, name)).__name__)\n"
        "asyncio.run(look())\n"
    )
    out = run_python(
        buildah, container, script, s3_server.REGION, bucket, s3_server.url, key_id, secret, present
    )
    assert out.splitlines() == ["Found", "NotFound"]


def test_the_same_commit_builds_the_same_image(buildah: Buildah, base_image: str, image: Image) -> None:
    started = time.monotonic()
    again = make_image(buildah, base_image, f"{IMAGE}:{os.getpid()}-again")
    FIGURES["rebuild_seconds"] = round(time.monotonic() - started, 1)
    assert again == image.id


# ------------------------------------------------------------------ the image running


def _tree(root: Path) -> dict[str, tuple[int, ...]]:
    """Every path under `root` with what a write would change: type and mode, owner, size,
    mtime and ctime."""
    out: dict[str, tuple[int, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel in ("proc", "sys", "dev"):
            dirs[:] = []
            continue
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.normpath(os.path.join(rel, name))] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
            )
    return out


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc_stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = proc_stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(proc_stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    pid: int  # the entrypoint's process: what a container runtime signals
    port: int
    admin_port: int
    log: Path

    def admin(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5)

    def post(self, body: bytes, secret: str = SECRET) -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{self.port}/callback",
            content=body,
            timeout=5,
            headers={"Signature": sign(body, secret), "Content-Type": "application/json"},
        )

    def stop(self) -> int:
        """SIGTERM to the service, as `docker stop` and the kubelet send it."""
        os.kill(self.pid, signal.SIGTERM)
        return self.proc.wait(timeout=60)


def run_image(buildah: Buildah, image: Image, container: Container, log: Path) -> Running:
    """The image's entrypoint and command, as its user, on loopback ports of this machine."""
    port, admin_port = free_port(), free_port()
    env = {
        "GME_RECWATCH_SECRET_KEY": SECRET,
        "GME_RECWATCH_HOST": "127.0.0.1",
        "GME_RECWATCH_ADMIN_HOST": "127.0.0.1",
        "GME_RECWATCH_PORT": str(port),
        "GME_RECWATCH_ADMIN_PORT": str(admin_port),
        "GME_RECWATCH_LOG_FORMAT": "json",
        # only the snapshot written on SIGTERM
        "GME_RECWATCH_SNAPSHOT_INTERVAL_SECONDS": "3600",
    }
    argv = [buildah.binary, "run"]
    for k, v in env.items():
        argv += ["--env", f"{k}={v}"]
    argv += [container.name, "--", *image.config["Entrypoint"], *image.config["Cmd"]]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=buildah.env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    pid = 0
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the image exited with {proc.returncode}:\n{log.read_text()}"
        if not pid:
            pid = next(
                (
                    p
                    for p in _descendants(proc.pid)
                    if Path(f"/proc/{p}/cmdline")
                    .read_bytes()
                    .split(b"\0")[0]
                    .rsplit(b"/", 1)[-1]
                    .startswith(b"python")
                ),
                0,
            )
        try:
            if pid and httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=1).status_code == 200:
                return Running(proc, pid, port, admin_port, log)
        except (httpx.HTTPError, FileNotFoundError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the image did not become ready:\n{log.read_text()}")


def test_the_image_serves_writes_only_its_state_and_snapshots_on_sigterm(
    buildah: Buildah, image: Image, container: Container, tmp_path: Path
) -> None:
    before = _tree(container.rootfs)
    log = tmp_path / "service.log"
    started = time.monotonic()
    svc = run_image(buildah, image, container, log)
    FIGURES["start_to_ready_seconds"] = round(time.monotonic() - started, 2)
    try:
        status = Path(f"/proc/{svc.pid}/status").read_text()
        assert re.search(r"(?m)^Uid:\s+10001\s+10001\s+10001\s+10001$", status), status
        assert re.search(r"(?m)^Gid:\s+10001\s+10001\s+10001\s+10001$", status), status

        r = svc.post(callback_body(1, room="image-room"))
        assert r.status_code == 200 and r.json() == {"code": 0}
        assert svc.post(callback_body(1, room="image-room"), secret="wrong").status_code == 401
        metrics = svc.admin("/metrics")
        assert metrics.status_code == 200
        assert (
            metric_value(metrics.text, "gme_recording_callbacks_total", event_type="started", result="accepted")
            == 1
        )
        ready = svc.admin("/readyz")
        assert ready.status_code == 200 and ready.json()["segments"] == 1
        # litestar builds the admin API's schema on the first request for it (the one place
        # it would have wanted polyfactory and faker, had the project not turned examples off)
        schema = svc.admin("/schema/openapi.json")
        assert schema.status_code == 200 and "/api/v1/segments" in schema.json()["paths"]

        # The canary, from a second process in the same container, as the chart's CronJob runs it.
        canary = buildah(
            "run",
            "--env",
            f"GME_RECWATCH_SECRET_KEY={SECRET}",
            container.name,
            "--",
            "gme-recwatch",
            "canary",
            "--url",
            f"http://127.0.0.1:{svc.port}/callback",
        )
        assert canary.startswith("canary ok: 200"), canary
        assert (
            metric_value(svc.admin("/metrics").text, "gme_recording_canary_last_success_timestamp_seconds") > 0
        )

        assert svc.stop() == 0, log.read_text()
    finally:
        if svc.proc.poll() is None:
            svc.proc.kill()
            svc.proc.wait()
    assert '"event": "stopped"' in log.read_text()
    snapshot = container.rootfs / STATE_DIR / "state.snapshot"
    assert snapshot.is_file() and snapshot.stat().st_uid == 10001

    after = _tree(container.rootfs)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    # buildah itself marks every container it runs with /run/.containerenv, as podman does.
    runtime_own = {"run", "run/.containerenv"}
    elsewhere = [
        p
        for p in changed
        if p not in runtime_own and not any(p == d or p.startswith(d + "/") for d in (STATE_DIR, "tmp"))
    ]
    assert elsewhere == []
    assert f"{STATE_DIR}/state.snapshot" in changed

    # A restart of the same container finds the segment in the snapshot.
    again = run_image(buildah, image, container, log)
    try:
        assert again.admin("/readyz").json()["segments"] == 1
        assert metric_value(again.admin("/metrics").text, "gme_recording_snapshot_restored_segments") == 1
        assert again.stop() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
            again.proc.wait()
