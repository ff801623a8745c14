"""Image build step: the final stage's files, as three trees the Dockerfile copies onto `scratch`.

    /out/runtime  the interpreter, its standard library (minus what a service never runs), the
                  shared libraries that it and the installed wheels link against, CA
                  certificates and a passwd/group naming UID/GID 10001; no shell, no package
                  manager, no pip or setuptools
    /out/deps     /opt/venv without the project: changes only when uv.lock does
    /out/app      the project, and the SBOM (/usr/share/doc/gme-recwatch/sbom.cdx.json)

Run by the builder's own interpreter (the one that ships) as
``/opt/venv/bin/python -B assemble_runtime.py /out``, after `uv sync` filled /opt/venv.
Shared libraries are found by asking the dynamic loader (``ldd``) about every ELF file that
ships, not from a list; ``dpkg -S`` names the Debian package each came from, for the SBOM.

Bytecode: every module that ships is compiled (stdlib and venv), with a hash of its source
instead of its mtime (the same sources give the same bytes, whatever the layers' timestamps).
The sources stay: tracebacks and log records of an exception quote the failing line from the
.py file, and an operator reading one needs it; they cost about 25 MB.

Every file gets SOURCE_DATE_EPOCH as its mtime, so a rebuild gives the same layers with
docker as well as with buildah/podman (which set it themselves with --timestamp).
"""

from __future__ import annotations

import compileall
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import py_compile
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

VENV = Path(sys.prefix)  # /opt/venv: this script runs on its interpreter
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH") or 0)
STATE_DIR = "var/lib/gme-recwatch"
SBOM_PATH = "usr/share/doc/gme-recwatch/sbom.cdx.json"

# Parts of the standard library a network service never imports: the test suite, GUIs, the
# tools that install packages or build C extensions, and the static libpython.
STDLIB_CUT = {
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip", "lib2to3",
    "pydoc_data", "distutils", "venv", "site-packages", "dist-packages", "__pycache__",
}  # fmt: skip
STDLIB_CUT_PREFIX = ("config-",)  # config-3.11-x86_64-linux-gnu: libpython.a and the Makefile
# Extension modules of the same kinds (Tk, curses, readline, the test helpers) and two for
# services a container never uses (NIS, Berkeley DB): what they link against (libtk,
# libncurses, libreadline; libnsl, libtirpc and Kerberos; libdb, 3.6 MB in all) stays out too.
DYNLOAD_CUT = re.compile(
    r"^(_tkinter|_test\w*|_xxtestfuzz|xxlimited\w*|_ctypes_test|readline|_curses\w*|nis|_dbm)\."
)
# In the venv: what uv put there for a shell user, not the service.
VENV_BIN_KEEP = re.compile(r"^(python[0-9.]*|gme-recwatch)$")

PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\nrecwatch:x:10001:10001::/nonexistent:/usr/sbin/nologin\n"  # noqa: S105 - /etc/passwd, no password in it
GROUP = "root:x:0:\nrecwatch:x:10001:\n"
# glibc (>= 2.34) has the files and dns backends built in: no libnss_* to ship.
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"


def copy_path(src: str, dst_root: Path, copied: set[str]) -> None:
    """`src` into `dst_root` at the same path, following symlinks: each link is copied as a
    link and its target copied too (/usr/bin/python3 -> python3.11; /lib -> usr/lib)."""
    path = os.path.normpath(src)
    if path in copied or path == "/":
        return
    parent = os.path.dirname(path)
    copy_path(parent, dst_root, copied)  # a parent that is a link (usr-merged /lib) comes first
    copied.add(path)
    dst = dst_root / path.lstrip("/")
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        if not dst.is_symlink():
            dst.symlink_to(target)
        copy_path(os.path.join(parent, target), dst_root, copied)
    elif stat.S_ISDIR(st.st_mode):
        dst.mkdir(exist_ok=True)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    else:
        shutil.copy2(path, dst)


def is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def needed_libraries(elf_files: list[Path]) -> set[str]:
    """Every shared library the dynamic loader maps for these files, the loader included."""
    found: set[str] = set()
    for f in elf_files:
        out = subprocess.run(["ldd", str(f)], capture_output=True, text=True, check=False).stdout
        if "not found" in out:
            raise SystemExit(f"{f}: a library it needs is not installed:\n{out}")
        for line in out.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                found.add(m.group(1))
    return found


def stdlib_files(stdlib: Path, dynload: Path) -> list[Path]:
    keep = []
    for dirpath, dirs, files in os.walk(stdlib):
        here = Path(dirpath)
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_CUT and not d.startswith(STDLIB_CUT_PREFIX))
        for name in sorted(files):
            if name in STDLIB_CUT or name.endswith((".pyc", ".a", ".exe")):
                continue
            if here == dynload and DYNLOAD_CUT.match(name):
                continue
            keep.append(here / name)
    return keep


def dpkg_owners(paths: list[str]) -> dict[str, str]:
    """{path: Debian package} for the paths dpkg's file lists name (as installed, or under
    their pre-usr-merge name: /lib/x86_64-linux-gnu/libc.so.6 for /usr/lib/...)."""
    listed: dict[str, str] = {}
    for lst in sorted(Path("/var/lib/dpkg/info").glob("*.list")):
        for line in lst.read_text().splitlines():
            listed.setdefault(os.path.normpath(line), lst.stem)
    owners: dict[str, str] = {}
    for path in paths:
        variants = [path, os.path.realpath(path)]
        variants += [re.sub(r"^/usr/(lib|lib64|bin|sbin)/", r"/\1/", v) for v in list(variants)]
        owner = next((listed[v] for v in variants if v in listed), None)
        if owner:
            owners[path] = owner
    return owners


def debian_components(owners: dict[str, str]) -> list[dict[str, object]]:
    pkgs = sorted(set(owners.values()))
    if not pkgs:
        return []
    fmt = "${binary:Package}\t${Version}\t${Architecture}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt, *pkgs], capture_output=True, text=True, check=True)
    release = {}
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            k, _, v = line.partition("=")
            release[k] = v.strip('"')
    distro = f"{release.get('ID', 'debian')}-{release.get('VERSION_ID', '')}"
    comps = []
    for line in sorted(set(out.stdout.splitlines())):
        pkg, version, arch = line.split("\t")
        name = pkg.split(":")[0]
        comps.append(
            {
                "type": "library" if name.startswith("lib") else "application",
                "bom-ref": f"deb:{name}",
                "name": name,
                "version": version,
                "purl": f"pkg:deb/{release.get('ID', 'debian')}/{name}@{version}?arch={arch}&distro={distro}",
                "properties": [
                    {"name": "gme-recwatch:files", "value": str(sum(1 for p in owners.values() if p == pkg))}
                ],
            }
        )
    return comps


def python_components(sites: list[str]) -> list[dict[str, object]]:
    comps = []
    for dist in importlib.metadata.distributions(path=sites):
        name, version = dist.metadata["Name"], dist.version
        norm = re.sub(r"[-_.]+", "-", name).lower()
        comp: dict[str, object] = {
            "type": "library",
            "bom-ref": f"pypi:{norm}",
            "name": name,
            "version": version,
            "purl": f"pkg:pypi/{norm}@{version}",
        }
        lic = dist.metadata.get("License-Expression") or ""
        if not lic:
            classifiers = [c for c in dist.metadata.get_all("Classifier") or [] if c.startswith("License ::")]
            lic = classifiers[0].rsplit(" :: ", 1)[-1] if classifiers else ""
        if lic:
            comp["licenses"] = [
                {"expression": lic} if dist.metadata.get("License-Expression") else {"license": {"name": lic}}
            ]
        comps.append(comp)
    return sorted(comps, key=lambda c: str(c["bom-ref"]))


def write_sbom(out: Path, sites: list[str], owners: dict[str, str], unowned: list[str]) -> None:
    """A CycloneDX 1.5 document: every Python distribution in the venv, every Debian package a
    file of the image comes from, and the interpreter when no package owns it."""
    python = python_components(sites)
    version = next(str(c["version"]) for c in python if c["name"] == "gme-recwatch")
    components = python + debian_components(owners)
    if unowned:
        components.append(
            {
                "type": "application",
                "bom-ref": "generic:cpython",
                "name": "cpython",
                "version": platform.python_version(),
                "purl": f"pkg:generic/cpython@{platform.python_version()}",
                "properties": [{"name": "gme-recwatch:files", "value": str(len(unowned))}],
            }
        )
    body = json.dumps(components, sort_keys=True)
    when = datetime.datetime.fromtimestamp(EPOCH, datetime.UTC)
    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(body.encode()).hexdigest())}",
        "version": 1,
        "metadata": {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "component": {
                "type": "container",
                "bom-ref": "gme-recwatch-image",
                "name": "gme-recwatch",
                "version": version,
            },
        },
        "components": components,
    }
    dst = out / "app" / SBOM_PATH
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(sbom, indent=1, sort_keys=True) + "\n")


def compile_tree(tree: Path, out_root: Path) -> None:
    """Bytecode for every module under `tree` (inside `out_root`), naming its final path."""
    ok = compileall.compile_dir(
        str(tree),
        quiet=1,
        stripdir=str(out_root),
        prependdir="/",
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )
    if not ok:
        raise SystemExit(f"compileall failed under {tree}")


def main() -> None:
    out = Path(sys.argv[1])
    runtime, deps, app = out / "runtime", out / "deps", out / "app"
    for d in (runtime, deps, app):
        d.mkdir(parents=True)
    copied: set[str] = set()

    # -- the interpreter and its standard library
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    link = VENV / "bin/python"
    while link.is_symlink() and VENV in link.parents:  # the venv's links lead to the base's
        link = Path(os.path.normpath(link.parent / os.readlink(link)))
    copy_path(str(link), runtime, copied)
    base_bin = Path(os.path.realpath(link)).parent
    for name in ("python3", f"python3.{sys.version_info.minor}"):
        if (base_bin / name).exists():
            copy_path(str(base_bin / name), runtime, copied)
    for f in stdlib_files(stdlib, dynload):
        copy_path(str(f), runtime, copied)
    if dynload.is_dir() and not str(dynload).startswith(str(stdlib)):
        for f in sorted(dynload.iterdir()):
            if not DYNLOAD_CUT.match(f.name):
                copy_path(str(f), runtime, copied)

    # -- the venv: the project apart, so that a new commit changes a small layer only
    site = Path(sysconfig.get_paths(vars={"base": str(VENV), "platbase": str(VENV)})["purelib"])
    for dirpath, dirs, files in os.walk(VENV):
        here = Path(dirpath)
        dirs.sort()
        for name in [*sorted(files), *[d for d in dirs if (here / d).is_symlink()]]:
            src = here / name
            if here == VENV / "bin" and not VENV_BIN_KEEP.match(name):
                continue
            if "__pycache__" in src.parts:
                continue
            ours = (here == site and name.startswith("gme_recwatch")) or site / "gme_recwatch" in src.parents
            dst = (app if ours else deps) / str(src).lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                dst.symlink_to(os.readlink(src))
            else:
                shutil.copy2(src, dst)

    # -- the shared libraries every ELF file that ships is linked against
    elves = [
        p
        for tree in (runtime, deps)
        for p in tree.rglob("*")
        if p.is_file() and not p.is_symlink() and is_elf(p)
    ]
    originals = [Path("/" + str(p.relative_to(runtime if runtime in p.parents else deps))) for p in elves]
    libs = needed_libraries(originals)
    # glibc loads libgcc_s itself when a thread exits through pthread_exit (CPython does that
    # to a daemon thread at interpreter shutdown): ldd cannot see it.
    libc = next((lib for lib in libs if re.search(r"/libc\.so\.6$", lib)), None)
    if libc and os.path.exists(os.path.join(os.path.dirname(libc), "libgcc_s.so.1")):
        libs.add(os.path.join(os.path.dirname(libc), "libgcc_s.so.1"))
    libs = {lib for lib in libs if not lib.startswith(str(VENV) + "/")}  # wheels' own vendored libs
    # Debug symbols and the static symbol table off the wheels' extensions (uvloop's .so is
    # 13 MB of 15); Debian ships its libraries stripped already. No debugger runs here.
    subprocess.run(["strip", "--strip-unneeded", *(str(p) for p in elves if deps in p.parents)], check=True)
    for lib in sorted(libs):
        copy_path(lib, runtime, copied)

    # -- TLS trust (OpenSSL's default paths and the Debian bundle), accounts, name service
    for extra in ("/etc/ssl/certs/ca-certificates.crt", "/usr/lib/ssl/cert.pem", "/usr/lib/ssl/certs",
                  "/usr/lib/ssl/openssl.cnf"):  # fmt: skip
        if os.path.lexists(extra):
            copy_path(extra, runtime, copied)
    (runtime / "etc").mkdir(exist_ok=True)
    (runtime / "etc/passwd").write_text(PASSWD)
    (runtime / "etc/group").write_text(GROUP)
    (runtime / "etc/nsswitch.conf").write_text(NSSWITCH)
    # The loader's cache, made for this tree: /usr/local/lib (python:3.x-slim's libpython) is
    # found through it, not through a default path.
    for conf in ("/etc/ld.so.conf", "/etc/ld.so.conf.d"):
        if os.path.exists(conf):
            copy_path(conf, runtime, copied)
            if os.path.isdir(conf):
                for f in sorted(os.listdir(conf)):
                    copy_path(os.path.join(conf, f), runtime, copied)
    subprocess.run(["ldconfig", "-r", str(runtime)], check=True)
    (runtime / "tmp").mkdir(exist_ok=True)
    os.chmod(runtime / "tmp", 0o1777)  # noqa: S103 - /tmp, sticky, as everywhere
    (runtime / STATE_DIR).parent.mkdir(parents=True, exist_ok=True)
    (out / "state").mkdir()  # the state directory, empty: the Dockerfile gives it to UID 10001

    # -- bytecode, the SBOM, the dates
    compile_tree(runtime / str(stdlib).lstrip("/"), runtime)
    compile_tree(deps / str(VENV).lstrip("/"), deps)
    compile_tree(app / str(VENV).lstrip("/"), app)
    system_files = sorted(
        "/" + str(p.relative_to(runtime)) for p in runtime.rglob("*") if p.is_file() and not p.is_symlink()
    )
    owners = dpkg_owners([p for p in system_files if not p.startswith("/etc/") or p.startswith("/etc/ssl/")])
    # An interpreter no package owns was built from source (python:3.x-slim's /usr/local).
    unowned = [
        p
        for p in system_files
        if p not in owners and not p.startswith(("/etc/", "/usr/lib/ssl/")) and "__pycache__" not in p
    ]
    if os.path.realpath(link) in owners:
        unowned = []
    write_sbom(out, [str(tree / str(site).lstrip("/")) for tree in (deps, app)], owners, unowned)
    for tree in (runtime, deps, app, out / "state"):
        for p in [tree, *tree.rglob("*")]:
            os.utime(p, (EPOCH, EPOCH), follow_symlinks=False)
    print(f"assembled {out}: {len(libs)} shared libraries, {len(owners)} files from Debian packages")


if __name__ == "__main__":
    main()
