"""The Helm chart, rendered and linted by the real Helm v4 engine (helm-python-sdk).

No cluster and no helm binary: ``helm_python.Chart.render`` runs Helm's own template engine
(with values.schema.json validation, as ``helm install`` does) and ``helm_python.lint`` is
``helm lint``. Core manifests are validated against the Kubernetes OpenAPI schemas shipped by
kubernetes-validate; the prometheus-operator CRDs (ServiceMonitor, PrometheusRule), which it
has no schemas for, are checked structurally here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from conftest import load_script
from kubernetes_validate import utils as kv_utils

import gme_recwatch
from gme_recwatch import settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "gme-recwatch"
SYNC = ROOT / "helm" / "sync-assets.sh"
DASHBOARDS = ROOT / "dashboards"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
# The newest Kubernetes version kubernetes-validate has schemas for.
KUBE_VERSION = kv_utils.latest_version()
RELEASE = "rec"
NAMESPACE = "media"
# Settings whose chart default differs from the service's, on purpose (values.yaml says why).
CHART_OWNED = {"keys_file", "state_file"}
REDIS_OWNED = {"redis_url", "redis_password_file"}  # set from `redis.*`, not `config`
KEYS = [
    {"bizId": "*", "key": "wildcard-secret-AAAA"},
    {"bizId": "1400000000", "key": "old-secret-BBBB"},
    {"bizId": "1400000000", "key": "new-secret-CCCC"},
]


@dataclasses.dataclass
class Rendered:
    """One render of the chart: parsed manifests plus the raw text of each template."""

    docs: list[dict[str, Any]]
    raw: dict[str, str]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def deployment_text(self) -> str:
        return self.raw["gme-recwatch/templates/deployment.yaml"]

    @property
    def container(self) -> dict[str, Any]:
        pod = self.one("Deployment")["spec"]["template"]["spec"]
        assert len(pod["containers"]) == 1
        return pod["containers"][0]

    @property
    def env(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self.container["env"]:
            out[e["name"]] = e.get("value", e.get("valueFrom"))
        return out


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> Rendered:
    raw = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(raw.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return Rendered(docs=docs, raw=raw, notes=raw.get("gme-recwatch/templates/NOTES.txt", ""))


def scenario_values(path: Path | None) -> dict[str, Any]:
    return {} if path is None else yaml.safe_load(path.read_text())


SCENARIO_PARAMS = [pytest.param(None, id="defaults")] + [
    pytest.param(p, id=p.name.removesuffix("-values.yaml")) for p in SCENARIOS
]


def rule_files() -> list[Path]:
    """dashboards/rules/*.yaml that are Prometheus rule files (not promtool tests)."""
    out = []
    for p in sorted((DASHBOARDS / "rules").glob("*.yaml")):
        doc = yaml.safe_load(p.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            out.append(p)
    return out


RULES = load_script(DASHBOARDS / "rules.py")


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


# -- chart metadata, lint, schema ------------------------------------------------------------


def test_app_version_is_the_package_version(chart: helm.Chart) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == gme_recwatch.__version__


def test_scenarios_exist_for_every_optional_part() -> None:
    names = {p.name for p in SCENARIOS}
    assert len(names) >= 4, names
    switched_on = "".join(p.read_text() for p in SCENARIOS)
    for part in (
        "ingress:",
        "networkPolicy:",
        "podDisruptionBudget:",
        "persistence:",
        "existingClaim:",
        "serviceMonitor:",
        "prometheusRule:",
        "dashboards:",
        "existingSecret:",
        "release: kube-prometheus-stack",
        "alertmanagerConfig:",
    ):
        assert part in switched_on, part


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_lint_has_no_errors(scenario: Path | None) -> None:
    report = helm.lint(
        CHART, scenario_values(scenario), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 2 = warning, 3 = error; only informational notes (e.g. "icon is recommended").
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCont": 2}, "replicaCont"),
        ({"config": {"prot": 8080}}, "prot"),
        ({"ingress": {"enabeld": True}}, "enabeld"),
        ({"secret": {"keys": [{"bizID": "*", "key": "k"}]}}, "bizID"),
        ({"config": {"log_level": "verbose"}}, "log_level"),
        ({"config": {"secret_key": "leaked"}}, "secret_key"),
    ],
    ids=["top-level", "config", "ingress", "key-entry", "bad-choice", "secret-key-in-config"],
)
def test_a_typo_in_values_fails_rendering_and_lint(
    chart: helm.Chart, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    report = helm.lint(CHART, values)
    assert any(where in e for e in report["errors"]), report


def test_numeric_bizid_must_be_quoted(chart: helm.Chart) -> None:
    """An unquoted 1400000000 would reach the template as 1.4e+09; the schema refuses it."""
    with pytest.raises(helm.HelmValuesError, match="bizId"):
        chart.render({"secret": {"keys": [{"bizId": 1400000000, "key": "k"}]}}, name=RELEASE)


def test_more_than_one_replica_without_redis_is_refused_saying_why(chart: helm.Chart) -> None:
    with pytest.raises(Exception, match=r"replicaCount: 2 needs redis.url.*only part"):
        chart.render({"replicaCount": 2}, name=RELEASE)


def test_ingress_without_hosts_is_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="hosts"):
        chart.render({"ingress": {"enabled": True}}, name=RELEASE)


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        out.add(path)
        out |= _schema_paths(sub, path + ".")
    return out


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Paths of values.yaml down to where the schema stops describing (free-form k8s objects)."""
    out = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        out.add(path)
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in sub:
            out |= _value_paths(value, sub, path + ".")
    return out


def test_schema_describes_every_value_and_rejects_unknown_keys(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing: set[str] = set()

    def walk(v: dict[str, Any], s: dict[str, Any], prefix: str) -> None:
        for key, value in v.items():
            props = s.get("properties", {})
            if key not in props:
                missing.add(prefix + key)
                continue
            if isinstance(value, dict) and "properties" in props[key]:
                walk(value, props[key], prefix + key + ".")

    walk(values, schema, "")
    assert missing == set()

    # Every object the schema spells out is closed, so a misspelt key cannot slip through.
    def closed(s: dict[str, Any], path: str) -> None:
        if "properties" in s:
            assert s.get("additionalProperties") is False, path or "<root>"
            for key, sub in s["properties"].items():
                closed(sub, f"{path}.{key}")
        if isinstance(s.get("items"), dict):
            closed(s["items"], path + "[]")

    closed(schema, "")


# -- every manifest is valid Kubernetes --------------------------------------------------------


def _validate_servicemonitor(doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    assert isinstance(spec["selector"]["matchLabels"], dict) and spec["selector"]["matchLabels"]
    assert spec["endpoints"], "a ServiceMonitor needs endpoints"
    for ep in spec["endpoints"]:
        assert set(ep) <= {
            "port",
            "path",
            "scheme",
            "interval",
            "scrapeTimeout",
            "honorLabels",
            "relabelings",
            "metricRelabelings",
        }
        assert isinstance(ep["port"], str)
        for field in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", ep[field]), ep[field]
    assert set(spec["namespaceSelector"]) <= {"any", "matchNames"}
    assert set(spec) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}


def _validate_prometheusrule(doc: dict[str, Any]) -> None:
    groups = doc["spec"]["groups"]
    assert isinstance(groups, list) and groups
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)), "group names must be unique"
    for g in groups:
        assert set(g) <= {
            "name",
            "interval",
            "rules",
            "limit",
            "partial_response_strategy",
            "query_offset",
            "labels",
        }, g.keys()
        for rule in g["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert set(rule) <= {
                "alert",
                "record",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            }, rule.keys()
            for k, v in {**rule.get("labels", {}), **rule.get("annotations", {})}.items():
                assert isinstance(k, str) and isinstance(v, str), (k, v)


def _validate_alertmanagerconfig(doc: dict[str, Any]) -> None:
    """The fields of the v1alpha1 CRD's spec.inhibitRules (prometheus-operator)."""
    rules = doc["spec"]["inhibitRules"]
    assert set(doc["spec"]) == {"inhibitRules"} and rules
    for rule in rules:
        assert set(rule) == {"sourceMatch", "targetMatch", "equal"}, rule.keys()
        for m in rule["sourceMatch"] + rule["targetMatch"]:
            assert set(m) == {"name", "value", "matchType"} and m["matchType"] in ("=", "!=", "=~", "!~"), m
            assert all(isinstance(v, str) for v in m.values())


CRD_VALIDATORS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _validate_servicemonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): _validate_prometheusrule,
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): _validate_alertmanagerconfig,
}


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_every_manifest_is_valid_kubernetes(chart: helm.Chart, scenario: Path | None) -> None:
    out = render(chart, scenario_values(scenario))
    assert out.docs
    for doc in out.docs:
        meta = doc["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), meta["name"]
        assert len(meta["name"]) <= 63
        crd_check = CRD_VALIDATORS.get((doc["apiVersion"], doc["kind"]))
        if crd_check is not None:
            assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
            crd_check(doc)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{meta['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_every_resource_has_the_standard_labels(chart: helm.Chart, scenario: Path | None) -> None:
    out = render(chart, scenario_values(scenario))
    for doc in out.docs:
        labels = doc["metadata"]["labels"]
        # A pod of its own (the online check) must not match the Services' selector: its name
        # says which component it is.
        component = labels.get("app.kubernetes.io/component") if doc["kind"] == "Pod" else None
        assert labels["app.kubernetes.io/name"] == (
            f"gme-recwatch-{component}" if component else "gme-recwatch"
        )
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == gme_recwatch.__version__
        assert labels["helm.sh/chart"] == f"gme-recwatch-{chart.version}"
    deploy = out.one("Deployment")
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "gme-recwatch", "app.kubernetes.io/instance": RELEASE}
    assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()


# -- Deployment --------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_pod_is_hardened(chart: helm.Chart, scenario: Path | None) -> None:
    out = render(chart, scenario_values(scenario))
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    psc, csc = pod["securityContext"], out.container["securityContext"]
    assert psc["runAsNonRoot"] is True and csc["runAsNonRoot"] is True
    assert psc["runAsUser"] == csc["runAsUser"] == 10001
    assert psc["seccompProfile"] == csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    res = out.container["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"]
    assert res["limits"]["cpu"] and res["limits"]["memory"]
    # A read-only root needs writable scratch space, and the snapshot directory unless the
    # state is in Redis.
    mounts = {m["mountPath"]: m for m in out.container["volumeMounts"]}
    assert "/tmp" in mounts
    assert ("/var/lib/gme-recwatch" in mounts) is not bool(out.env.get("GME_RECWATCH_REDIS_URL"))


@pytest.mark.parametrize(
    "scenario",
    [
        p
        for p in SCENARIO_PARAMS  # Redis scenarios roll
        if not scenario_values(p.values[0]).get("redis")
    ],
)
def test_one_replica_with_recreate_strategy(chart: helm.Chart, scenario: Path | None) -> None:
    spec = render(chart, scenario_values(scenario)).one("Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_probes_hit_the_admin_listener_by_port_name(chart: helm.Chart) -> None:
    c = render(chart).container
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"callback": 8080, "admin": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["args"] == ["serve"]


def test_ports_follow_the_config(chart: helm.Chart) -> None:
    out = render(chart, {"config": {"port": 9000, "admin_port": 9001}})
    ports = {p["name"]: p["containerPort"] for p in out.container["ports"]}
    assert ports == {"callback": 9000, "admin": 9001}
    assert out.env["GME_RECWATCH_PORT"] == "9000"
    assert out.env["GME_RECWATCH_ADMIN_PORT"] == "9001"
    assert out.container["livenessProbe"]["httpGet"]["port"] == "admin"


def test_callback_service_carries_only_the_callback_port(chart: helm.Chart) -> None:
    out = render(chart)
    callback = out.one("Service", f"{RELEASE}-gme-recwatch")
    admin = out.one("Service", f"{RELEASE}-gme-recwatch-admin")
    assert callback["spec"]["ports"] == [
        {"name": "callback", "port": 8080, "targetPort": "callback", "protocol": "TCP"}
    ]
    assert admin["spec"]["ports"] == [{"name": "admin", "port": 8081, "targetPort": "admin", "protocol": "TCP"}]
    assert admin["spec"]["type"] == "ClusterIP"
    assert callback["metadata"]["labels"]["app.kubernetes.io/component"] == "callback"
    assert admin["metadata"]["labels"]["app.kubernetes.io/component"] == "admin"
    pod_labels = out.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for svc in (callback, admin):
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_loadbalancer_exposes_only_the_callback_port(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "loadbalancer-values.yaml"))
    lbs = [s for s in out.of_kind("Service") if s["spec"]["type"] == "LoadBalancer"]
    assert len(lbs) == 1
    assert [p["targetPort"] for p in lbs[0]["spec"]["ports"]] == ["callback"]
    assert lbs[0]["spec"]["externalTrafficPolicy"] == "Local"
    assert 'echo "http://$CALLBACK_IP:80/callback"' in out.notes


# -- keys --------------------------------------------------------------------------------------


def test_keys_live_in_a_mounted_secret_never_in_the_deployment(chart: helm.Chart) -> None:
    out = render(chart, {"secret": {"keys": KEYS}})
    deployment_text = out.deployment_text()
    for entry in KEYS:
        assert entry["key"] not in deployment_text
    assert "GME_RECWATCH_SECRET_KEY" not in deployment_text
    secret = out.one("Secret")
    keyring = secret["stringData"]["keyring"]
    lines = [ln for ln in keyring.splitlines() if ln and not ln.startswith("#")]
    # Both keys of the app being rotated are in the keyring, so both verify.
    assert lines == ["*=wildcard-secret-AAAA", "1400000000=old-secret-BBBB", "1400000000=new-secret-CCCC"]
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "keyring")
    assert vol["secret"]["secretName"] == secret["metadata"]["name"]
    assert vol["secret"]["items"] == [{"key": "keyring", "path": "keyring"}]
    mount = next(m for m in out.container["volumeMounts"] if m["name"] == "keyring")
    # No subPath: a subPath mount would never see Secret updates, and rotation needs them.
    assert "subPath" not in mount and mount["readOnly"] is True
    assert mount["mountPath"] + "/keyring" == out.env["GME_RECWATCH_KEYS_FILE"]
    # No checksum annotation: the service reloads the file, a restart is not wanted.
    annotations = pod.get("annotations", {}) | out.one("Deployment")["spec"]["template"]["metadata"].get(
        "annotations", {}
    )
    assert not any(k.startswith("checksum/") for k in annotations)


def test_the_service_parses_the_rendered_keyring(chart: helm.Chart) -> None:
    signature = pytest.importorskip("gme_recwatch.signature")
    keyring = render(chart, {"secret": {"keys": KEYS}}).one("Secret")["stringData"]["keyring"]
    ring = signature.parse_keys_file(keyring)
    assert ring.keys_for(1400000000) == (b"old-secret-BBBB", b"new-secret-CCCC", b"wildcard-secret-AAAA")
    assert ring.keys_for(1400000001) == (b"wildcard-secret-AAAA",)


def test_existing_secret_is_mounted_and_no_secret_is_rendered(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "existing-claim-values.yaml"))
    assert out.of_kind("Secret") == []
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "keyring")
    assert vol["secret"]["secretName"] == "recwatch-keyring"
    assert vol["secret"]["items"] == [{"key": "keys.txt", "path": "keyring"}]
    assert "recwatch-keyring" in out.notes


def test_without_keys_the_notes_warn_loudly(chart: helm.Chart) -> None:
    assert "WARNING: no keys" in render(chart).notes
    assert "WARNING" not in render(chart, {"secret": {"keys": KEYS}}).notes


# -- every setting is reachable ----------------------------------------------------------------


def _settings_fields() -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in settings.fields()}


def test_config_mirrors_every_non_secret_setting(chart: helm.Chart) -> None:
    config = chart.values["config"]
    public = {n for n, f in _settings_fields().items() if not f.metadata["secret"]} - REDIS_OWNED
    assert set(config) == public
    for name in public - CHART_OWNED:
        default = _settings_fields()[name].default
        assert config[name] == default, f"config.{name}: chart {config[name]!r} != {default!r}"
    schema_config = chart.schema["properties"]["config"]["properties"]
    assert set(schema_config) == public


def test_rendered_env_loads_into_valid_settings(chart: helm.Chart) -> None:
    env = {k: v for k, v in render(chart).env.items() if isinstance(v, str)}
    loaded = settings.load(env)
    for f in settings.fields():
        if f.name in CHART_OWNED or f.metadata["secret"] or f.name == "canary_interval_seconds":
            continue
        assert getattr(loaded, f.name) == f.default, f.name
    assert loaded.canary_interval_seconds == 60  # the canary is on by default (#18)
    assert loaded.keys_file == "/etc/gme-recwatch/keys/keyring"
    assert loaded.state_file == "/var/lib/gme-recwatch/state.snapshot"


def _another_value(f: dataclasses.Field[Any]) -> Any:
    """A valid, non-default value for a setting."""
    if f.metadata["choices"]:
        return next(c for c in f.metadata["choices"] if c != f.default)
    special = {
        "keys_file": "/run/keys/ring.txt",
        "state_file": "/data/snap/state.bin",
        "host": "127.0.0.1",
        "admin_host": "::",
        "callback_path": "/gme/hook",
        "retention_seconds": 172800,
        "max_segments": 5_000_000,
        "replay_window_seconds": 300,  # at least the sender's retry span
        "redis_prefix": "stage:",
        "cos_bucket": "gme-records-1250000000",
        "cos_region": "ap-shanghai",
        "cos_endpoint": "https://cos.example.test",
        "cos_buckets_file": "/run/cos/buckets",
        "cos_credentials_file": "/run/cos/credentials",
        "cos_key_template": "recordings/{biz_id}/{file_name}",
        "apps_without_start_callbacks": "1400000001,1400000002",
    }
    if f.name in special:
        return special[f.name]
    if isinstance(f.default, float):
        return f.default + 0.25
    if isinstance(f.default, int):
        return f.default + 7
    raise AssertionError(f"no test value for {f.name}")


def test_every_setting_can_be_changed_from_values(chart: helm.Chart) -> None:
    fields = [f for f in settings.fields() if not f.metadata["secret"] and f.name not in REDIS_OWNED]
    config = {f.name: _another_value(f) for f in fields}
    # With the canary on (the default), `canary.intervalSeconds` sets its setting instead.
    out = render(chart, {"config": config, "canary": {"enabled": False}})
    loaded = settings.load({k: v for k, v in out.env.items() if isinstance(v, str)})
    for f in fields:
        assert getattr(loaded, f.name) == config[f.name], f.name
    mounts = {m["name"]: m["mountPath"] for m in out.container["volumeMounts"]}
    assert mounts["keyring"] == "/run/keys" and mounts["state"] == "/data/snap"
    ingress = render(chart, {"config": config, "ingress": {"enabled": True, "hosts": ["h.test"]}})
    assert ingress.one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/gme/hook"


def test_secret_settings_are_reachable_only_by_reference(chart: helm.Chart) -> None:
    """Secrets reach the pod by reference only (extraEnv from a Secret; the COS key through
    `cos.existingSecret`), never as plain values. (`secret_key` beside the chart's keys file
    would be refused at start: keys belong in the keyring Secret.)"""
    secret_fields = [f for f in settings.fields() if f.metadata["secret"]]
    assert secret_fields
    ref = {"secretKeyRef": {"name": "gme", "key": "secret-key"}}
    extra = [{"name": settings.env_name(f.name), "valueFrom": ref} for f in secret_fields]
    out = render(chart, {"extraEnv": extra})
    for f in secret_fields:
        assert out.env[settings.env_name(f.name)] == ref
        assert f.name not in chart.values["config"]


def test_large_numbers_are_not_rendered_in_exponent_form(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "persistence-values.yaml"))
    assert out.env["GME_RECWATCH_MAX_SEGMENTS"] == "2000000"
    assert out.env["GME_RECWATCH_SWEEP_INTERVAL_SECONDS"] == "0.5"


def test_extra_env_comes_after_config(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "loadbalancer-values.yaml"))
    names = [e["name"] for e in out.container["env"]]
    assert names[-1] == "OTEL_EXPORTER_OTLP_ENDPOINT"


# -- persistence -------------------------------------------------------------------------------


def test_state_survives_upgrades_by_default_on_a_claim(chart: helm.Chart) -> None:
    out = render(chart)
    pvc = out.one("PersistentVolumeClaim")
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert out.env["GME_RECWATCH_STATE_FILE"].startswith("/var/lib/gme-recwatch/")


def test_without_persistence_the_snapshot_is_on_an_emptydir(chart: helm.Chart) -> None:
    out = render(chart, {"persistence": {"enabled": False}})
    assert out.of_kind("PersistentVolumeClaim") == []
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert "emptyDir" in state


def test_a_pod_leaves_a_lost_node_after_30s(chart: helm.Chart) -> None:
    pod = render(chart, {"tolerations": [{"key": "gpu", "operator": "Exists"}]}).one("Deployment")["spec"][
        "template"
    ]["spec"]
    lost = {t["key"]: t for t in pod["tolerations"] if t.get("effect") == "NoExecute"}
    assert set(lost) == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    assert {t["tolerationSeconds"] for t in lost.values()} == {30}
    assert {"key": "gpu", "operator": "Exists"} in pod["tolerations"]
    default = render(chart, {"nodeFailureTolerationSeconds": None}).one("Deployment")
    assert "tolerations" not in default["spec"]["template"]["spec"]


def test_persistence_creates_a_claim_for_the_snapshot(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "persistence-values.yaml"))
    pvc = out.one("PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["spec"]["storageClassName"] == "standard"
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_existing_claim_is_used_and_none_is_created(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "existing-claim-values.yaml"))
    assert out.of_kind("PersistentVolumeClaim") == []
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state["persistentVolumeClaim"]["claimName"] == "recwatch-state"


def test_keyring_and_snapshot_cannot_share_a_directory(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="separate directories"):
        chart.render({"config": {"keys_file": "/data/keyring", "state_file": "/data/state"}}, name=RELEASE)


# -- Ingress, NOTES, NetworkPolicy, PDB --------------------------------------------------------


def test_ingress_is_off_by_default(chart: helm.Chart) -> None:
    assert render(chart).of_kind("Ingress") == []


def test_ingress_routes_only_the_callback_path(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "exposed-values.yaml"))
    ing = out.one("Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"secretName": "recwatch-tls", "hosts": ["recwatch.example.com"]}]
    assert ing["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "recwatch.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/callback",
            "pathType": "Exact",
            "backend": {"service": {"name": f"{RELEASE}-gme-recwatch", "port": {"name": "callback"}}},
        }
    ]
    assert "defaultBackend" not in ing["spec"]


def test_notes_print_the_console_url_from_the_ingress(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "exposed-values.yaml"))
    assert "https://recwatch.example.com/callback" in out.notes
    plain = render(chart, {"ingress": {"enabled": True, "hosts": ["h.test"]}})
    assert "http://h.test/callback" in plain.notes and "clear text" in plain.notes


def test_notes_explain_port_forward_without_an_ingress(chart: helm.Chart) -> None:
    notes = render(chart).notes
    assert f"kubectl port-forward --namespace {NAMESPACE} svc/{RELEASE}-gme-recwatch 8080" in notes
    assert "http://127.0.0.1:8080/callback" in notes


def test_network_policy_opens_callbacks_and_keeps_admin_to_monitoring(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "exposed-values.yaml"))
    np = out.one("NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    callback_rule, admin_rule = np["spec"]["ingress"]
    assert callback_rule == {"ports": [{"port": "callback", "protocol": "TCP"}]}  # from anywhere
    assert admin_rule["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert admin_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    custom = render(chart, scenario_values(CHART / "ci" / "loadbalancer-values.yaml"))
    (peer,) = custom.one("NetworkPolicy")["spec"]["ingress"][1]["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "observability"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_network_policy_admits_callbacks_only_from_the_ingress_namespace_named(chart: helm.Chart) -> None:
    policy = {"enabled": True, "callback": {"ingressNamespace": "ingress-nginx"}}
    out = render(chart, {"networkPolicy": policy})
    callback_rule = out.one("NetworkPolicy")["spec"]["ingress"][0]
    assert callback_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    extra = {"ipBlock": {"cidr": "10.0.0.0/8"}}
    both = render(chart, {"networkPolicy": {**policy, "callback": {**policy["callback"], "from": [extra]}}})
    assert both.one("NetworkPolicy")["spec"]["ingress"][0]["from"][1] == extra
    for doc in both.docs:
        if doc["kind"] == "NetworkPolicy":
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_pdb_is_optional(chart: helm.Chart) -> None:
    assert render(chart).of_kind("PodDisruptionBudget") == []
    pdb = render(chart, scenario_values(CHART / "ci" / "exposed-values.yaml")).one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# -- monitoring: ServiceMonitor, PrometheusRule, dashboards ------------------------------------


def test_monitoring_objects_are_off_by_default(chart: helm.Chart) -> None:
    out = render(chart)
    assert out.of_kind("ServiceMonitor") == [] and out.of_kind("PrometheusRule") == []
    assert out.of_kind("ConfigMap") == []


def test_service_monitor_scrapes_only_the_admin_service(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "monitoring-values.yaml"))
    sm = out.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (ep,) = sm["spec"]["endpoints"]
    assert (ep["port"], ep["path"], ep["interval"], ep["scrapeTimeout"]) == ("admin", "/metrics", "15s", "10s")
    selected = [
        s
        for s in out.of_kind("Service")
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == [f"{RELEASE}-gme-recwatch-admin"]
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # job="gme-recwatch" whatever the release name, as the shipped alerts and dashboards expect.
    job_label = sm["spec"]["jobLabel"]
    assert selected[0]["metadata"]["labels"][job_label] == "gme-recwatch"


def _rule_groups(out: Rendered) -> list[dict[str, Any]]:
    rule = out.one("PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def _alert(groups: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [r for g in groups for r in g["rules"] if r.get("alert") == name]
    return found


def test_prometheus_rule_with_the_default_knobs_is_exactly_the_rule_files(chart: helm.Chart) -> None:
    """The chart's templated copy and the plain files come from one definition: with the plain
    files' selector, rendering gives them back rule for rule."""
    files = rule_files()
    assert files
    values = scenario_values(CHART / "ci" / "monitoring-values.yaml")
    values["prometheusRule"] = {
        **values["prometheusRule"],
        "selector": RULES.DEFAULT_SELECTOR,
        "ruleLabels": {},
        "disabledAlerts": [],
        "alerts": {},
    }
    out = render(chart, values)
    rule = out.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    expected = [g for p in files for g in yaml.safe_load(p.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected


def test_every_rule_is_narrowed_to_the_release_namespace_and_job(chart: helm.Chart) -> None:
    out = render(chart, {"prometheusRule": {"enabled": True}})
    groups = _rule_groups(out)
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    selector = f'namespace="{NAMESPACE}", job="gme-recwatch"'
    for expr in exprs:
        for m in re.finditer(r"\b(gme_recording_\w+|process_\w+|up)\{([^}]*)\}", expr):
            assert m.group(2).startswith(selector), expr
    # No label-less duplicate: the absent branch names the release from the selector (#18).
    assert _alert(groups, "GmeRecwatchAbsent")["expr"].endswith(f"absent_over_time(up{{{selector}}}[1d])")
    # A fixed job for the release follows into the rules.
    named = render(chart, {"prometheusRule": {"enabled": True}, "serviceMonitor": {"job": "rec-prod"}})
    assert 'job="rec-prod"' in _alert(_rule_groups(named), "GmeRecwatchDown")["expr"]


def test_alert_knobs_are_values(chart: helm.Chart) -> None:
    assert chart.values["prometheusRule"]["alerts"] == RULES.defaults()
    out = render(
        chart,
        {
            "prometheusRule": {
                "enabled": True,
                "runbookUrl": "https://wiki.example.com/gme",
                "disabledAlerts": ["GmeRecwatchAppLabelOverflow"],
                "ruleLabels": {"team": "media-sre", "severity": "ignored"},
                "alerts": {
                    "GmeRecordingStuck": {"for": "7m", "severity": "critical", "window": "1h"},
                    "GmeRecordingSignatureFailureRatio": {"ratio": 0.5},
                },
            }
        },
    )
    groups = _rule_groups(out)
    names = {r.get("alert") for g in groups for r in g["rules"]}
    assert "GmeRecwatchAppLabelOverflow" not in names and "GmeRecordingStuck" in names
    stuck = _alert(groups, "GmeRecordingStuck")
    assert stuck["for"] == "7m"
    assert stuck["labels"] == {"severity": "critical", "team": "media-sre"}
    assert "[1h]" in stuck["expr"] and "[30m]" not in stuck["expr"]
    assert stuck["annotations"]["runbook_url"] == "https://wiki.example.com/gme#gmerecordingstuck"
    assert "{{ $value | humanize }}" in stuck["annotations"]["description"]
    ratio = _alert(groups, "GmeRecordingSignatureFailureRatio")
    assert "ratio_rate5m > 0.5\n" in ratio["expr"]
    # Untouched knobs keep their defaults.
    assert _alert(groups, "GmeRecwatchBackendDown")["for"] == "1m"


def test_an_unknown_alert_name_in_the_switch_off_list_fails(chart: helm.Chart) -> None:
    schema = chart.schema["properties"]["prometheusRule"]["properties"]
    assert schema["disabledAlerts"]["items"]["enum"] == list(RULES.defaults())
    assert schema["alerts"]["propertyNames"]["enum"] == list(RULES.defaults())
    with pytest.raises(helm.HelmValuesError, match="disabledAlerts"):
        chart.render(
            {"prometheusRule": {"enabled": True, "disabledAlerts": ["GmeRecordingStuk"]}},
            name=RELEASE,
            namespace=NAMESPACE,
        )


def test_chart_rule_templates_are_what_the_generator_writes() -> None:
    for path, text in RULES.written().items():
        assert path.read_text() == text, f"{path.name} is stale: run dashboards/rules.py"


def test_slo_knobs_are_values_and_reach_the_rules(chart: helm.Chart) -> None:
    pr = chart.values["prometheusRule"]
    assert {k: pr[k] for k in RULES.knob_defaults()} == RULES.knob_defaults()
    out = render(
        chart,
        {
            "prometheusRule": {
                "enabled": True,
                "slo": {"windows": {"pageLong": "2h"}, "ingest": {"objective": 0.995, "slowSeconds": "1.0"}},
                "alerts": {"GmeRecwatchBackendDown": {"for": "3m"}},
            }
        },
    )
    groups = _rule_groups(out)
    records = [r for g in groups for r in g["rules"] if "record" in r]
    long = [r for r in records if r.get("labels") == {"slo": "ingest", "window": "page_long"}]
    assert long and all(
        "[2h]" in r["expr"] for r in long if ":increase" in r["record"] and "ratio" not in r["record"]
    )
    assert any('le="1.0"' in r["expr"] for r in long)
    objective = next(
        r
        for r in records
        if r["record"] == "instance:gme_recording_slo_objective:ratio" and r["labels"] == {"slo": "ingest"}
    )
    assert objective["expr"].endswith("+ 0.995")
    burn = _alert(groups, "GmeRecwatchIngestBudgetBurn")
    assert "> 14.4 * (1 - 0.995)" in burn["expr"]
    assert _alert(groups, "GmeRecwatchBackendDown")["for"] == "3m"
    # #31.4: no alert outlasts its cause.
    assert not [r for g in groups for r in g["rules"] if "keep_firing_for" in r]
    with pytest.raises(helm.HelmValuesError, match="slowSeconds"):
        chart.render(
            {"prometheusRule": {"slo": {"ingest": {"slowSeconds": "3"}}}}, name=RELEASE, namespace=NAMESPACE
        )


def test_inhibit_rules_install_as_an_alertmanager_config_equal_to_the_plain_file(chart: helm.Chart) -> None:
    """#20: opt-in, and the same rules as dashboards/alertmanager-inhibit.yaml, both written
    from one definition in dashboards/rules.py."""
    assert render(chart).of_kind("AlertmanagerConfig") == []
    out = render(chart, {"alertmanagerConfig": {"enabled": True, "additionalLabels": {"alertmanager": "main"}}})
    amc = out.one("AlertmanagerConfig")
    assert amc["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    assert amc["metadata"]["namespace"] == NAMESPACE
    assert amc["metadata"]["labels"]["alertmanager"] == "main"
    plain = yaml.safe_load((DASHBOARDS / "alertmanager-inhibit.yaml").read_text())["inhibit_rules"]

    def matcher(m: dict[str, str]) -> str:
        return f'{m["name"]}{m["matchType"]}"{m["value"]}"'

    assert [
        {
            "source_matchers": [matcher(m) for m in r["sourceMatch"]],
            "target_matchers": [matcher(m) for m in r["targetMatch"]],
            "equal": r["equal"],
        }
        for r in amc["spec"]["inhibitRules"]
    ] == plain
    assert all(r["equal"] == ["cluster", "namespace", "job"] for r in amc["spec"]["inhibitRules"])


def test_dashboards_configmap_is_exactly_the_dashboard_files(chart: helm.Chart) -> None:
    files = dashboard_files()
    if not files:
        pytest.skip("dashboards/ has no dashboard JSON yet")
    out = render(chart, scenario_values(CHART / "ci" / "monitoring-values.yaml"))
    cm = out.one("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "GME"}
    assert cm["data"] == {p.name: p.read_text() for p in files}
    for text in cm["data"].values():
        json.loads(text)
    custom = render(
        chart, {"dashboards": {"enabled": True, "label": "grafana-dash", "labelValue": "yes", "folder": ""}}
    )
    cm2 = custom.one("ConfigMap")
    assert cm2["metadata"]["labels"]["grafana-dash"] == "yes"
    assert "grafana_dashboard" not in cm2["metadata"]["labels"]
    assert "annotations" not in cm2["metadata"]


def test_chart_copies_of_the_dashboards_are_byte_identical() -> None:
    """helm/gme-recwatch/files/dashboards holds copies (Helm cannot read outside the chart);
    run helm/sync-assets.sh after changing dashboards/."""
    files = CHART / "files" / "dashboards"
    copied = sorted(p.name for p in files.glob("*") if p.name != ".gitkeep")
    assert copied == [p.name for p in dashboard_files()], "run helm/sync-assets.sh"
    for p in dashboard_files():
        assert (files / p.name).read_bytes() == p.read_bytes(), p.name


def test_sync_script_check_mode_agrees() -> None:
    proc = subprocess.run(["bash", str(SYNC), "--check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


# -- container image ---------------------------------------------------------------------------


def test_dockerfile_matches_the_chart(chart: helm.Chart) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # The base is a build argument whose default is the official slim image of one Python minor.
    base = re.search(r"(?m)^ARG BASE=(\S+)$", dockerfile)
    assert base is not None and re.fullmatch(
        r"python:3\.1[1-9]-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1)
    ), base
    stages = re.split(r"(?m)^FROM ", dockerfile)[1:]
    # The builder runs on the base; the final stage starts from nothing and takes the base's
    # interpreter, the libraries it links and the venv from the builder (no shell, no apt).
    assert [s.split()[0] for s in stages] == ["${BASE}", "scratch"]
    assert all(
        line.startswith("COPY --from=builder ")
        for line in stages[-1].splitlines()
        if line.startswith(("COPY", "ADD", "RUN"))
    )
    final = stages[-1]
    uid = chart.values["podSecurityContext"]["runAsUser"]
    assert re.search(rf"(?m)^USER {uid}(:{uid})?$", final)
    assert re.search(r'(?m)^ENTRYPOINT \["gme-recwatch"\]$', final)
    assert re.search(r'(?m)^CMD \["serve"\]$', final)
    exposed = re.search(r"(?m)^EXPOSE (.+)$", final)
    assert exposed is not None
    config = chart.values["config"]
    assert exposed.group(1).split() == [str(config["port"]), str(config["admin_port"])]
    for compiler in ("gcc", "build-essential", "g++"):
        assert compiler not in final
    assert chart.values["image"]["repository"] == "ghcr.io/gme-recwatch/gme-recwatch"
    assert chart.values["image"]["tag"] == ""  # defaults to appVersion


def test_image_tag_defaults_to_app_version_and_is_configurable(chart: helm.Chart) -> None:
    assert render(chart).container["image"] == (f"ghcr.io/gme-recwatch/gme-recwatch:{gme_recwatch.__version__}")
    assert render(chart, {"image": {"repository": "r.test/x", "tag": "9"}}).container["image"] == "r.test/x:9"


# -- README ------------------------------------------------------------------------------------


def test_readme_values_table_names_every_value(chart: helm.Chart) -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    paths = _value_paths(values, chart.schema)
    leaves = {p for p in paths if not any(q.startswith(p + ".") for q in paths)}
    missing = sorted(p for p in leaves if f"`{p}`" not in readme)
    assert missing == []


# -- shared state on Redis ---------------------------------------------------------------------


def test_with_redis_replicas_share_it_roll_one_by_one_and_spread(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "redis-values.yaml"))
    spec = out.one("Deployment")["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= spec["selector"]["matchLabels"].items()
    assert out.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert not out.of_kind("PersistentVolumeClaim")  # no snapshot: the state is in Redis
    assert "state" not in {v["name"] for v in pod["volumes"]}
    loaded = settings.load({k: v for k, v in out.env.items() if isinstance(v, str)})
    assert loaded.redis_url == "redis://gme-redis-master.gme.svc:6379/0"
    assert loaded.state_file == ""
    assert loaded.redis_password_file == "/etc/gme-recwatch/redis/password"
    secret_vol = next(v for v in pod["volumes"] if v["name"] == "redis-password")
    assert secret_vol["secret"] == {
        "secretName": "gme-redis",
        "defaultMode": 288,
        "items": [{"key": "redis-password", "path": "password"}],
    }
    mounts = {m["name"]: m["mountPath"] for m in out.container["volumeMounts"]}
    assert mounts["redis-password"] == "/etc/gme-recwatch/redis"
    assert "hunter" not in out.deployment_text()  # the password is only ever a file


def test_one_replica_on_redis_gets_no_budget_or_spread_it_could_not_use(chart: helm.Chart) -> None:
    out = render(chart, {"redis": {"url": "rediss://r.internal:6380/0"}})
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in pod
    assert not out.of_kind("PodDisruptionBudget")
    assert out.env["GME_RECWATCH_REDIS_URL"] == "rediss://r.internal:6380/0"
    assert "GME_RECWATCH_REDIS_PASSWORD_FILE" not in out.env


def test_a_redis_cluster_is_named_by_its_url_scheme_and_the_prefix_is_its_hash_tag(chart: helm.Chart) -> None:
    out = render(chart, scenario_values(CHART / "ci" / "redis-cluster-values.yaml"))
    assert out.one("Deployment")["spec"]["replicas"] == 3
    loaded = settings.load({k: v for k, v in out.env.items() if isinstance(v, str)})
    assert loaded.redis_url == "redis+cluster://gme-redis-redis-cluster.gme.svc:6379"
    assert loaded.redis_prefix == "{studio-a}:"
    assert loaded.redis_password_file == "/etc/gme-recwatch/redis/password"


def test_a_redis_url_of_another_scheme_is_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="url"):
        chart.render({"redis": {"url": "http://redis:6379"}}, name=RELEASE)


# -- canary ------------------------------------------------------------------------------------


def test_the_canary_runs_every_minute_against_the_public_url(chart: helm.Chart) -> None:
    out = render(
        chart,
        {
            "canary": {"enabled": True},
            "ingress": {
                "enabled": True,
                "hosts": ["rec.example.com"],
                "tls": [{"secretName": "t", "hosts": ["rec.example.com"]}],
            },
        },
    )
    cron = out.one("CronJob")
    assert cron["spec"]["schedule"] == "* * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == out.container["image"]
    assert container["args"][:2] == ["canary", "--url=https://rec.example.com/callback"]
    assert f"--keys-file={chart.values['config']['keys_file']}" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    # The service is told to expect it, so GmeRecwatchCanaryFailing can page.
    assert out.env["GME_RECWATCH_CANARY_INTERVAL_SECONDS"] == "60"
    # Its pods are not the service's: the Deployment's selector does not pick them.
    selector = out.one("Deployment")["spec"]["selector"]["matchLabels"]
    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items()


def test_the_canary_with_an_existing_secret_refuses_to_render_without_its_biz_id(chart: helm.Chart) -> None:
    """The chart cannot see which apps a Secret it does not manage has keys for: a canary signing
    as the default 1400000000 would fail, and page, from its first minute on a keyring without
    that app. So the render fails naming the value; with it, or without the canary, it renders."""
    ring = {"secret": {"existingSecret": "recwatch-keyring"}}
    with pytest.raises(
        Exception, match=r"canary\.bizId is required .*secret\.existingSecret \(recwatch-keyring\)"
    ):
        chart.render(ring, name=RELEASE, namespace=NAMESPACE)
    assert "--biz-id=1400000001" in _canary_args(render(chart, {**ring, "canary": {"bizId": 1400000001}}))
    assert not render(chart, {**ring, "canary": {"enabled": False}}).of_kind("CronJob")


def test_the_canary_url_falls_back_to_the_service_and_can_be_set(chart: helm.Chart) -> None:
    inside = render(chart, {"canary": {"enabled": True}}).one("CronJob")
    args = inside["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--url=http://{RELEASE}-gme-recwatch.{NAMESPACE}.svc:8080/callback" in args
    set_url = render(chart, {"canary": {"enabled": True, "url": "https://gme.example.com/hook"}})
    args = set_url.one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--url=https://gme.example.com/hook" in args
    off = render(chart, {"canary": {"enabled": False}})
    assert off.of_kind("CronJob") == []
    assert off.env["GME_RECWATCH_CANARY_INTERVAL_SECONDS"] == "0"


def _canary_args(out: Rendered) -> list[str]:
    cron = out.one("CronJob")
    args: list[str] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_the_canary_is_on_by_default_and_signs_as_an_app_it_has_a_key_for(chart: helm.Chart) -> None:
    """#18: without a canary a broken public path looks like a quiet night, so it is on by
    default; it signs as the first BizID the chart holds a key for, or as any app under `*`."""
    default = render(chart)
    assert default.env["GME_RECWATCH_CANARY_INTERVAL_SECONDS"] == "60"
    assert "--biz-id=1400000000" in _canary_args(default)
    own = render(chart, {"secret": {"keys": [{"bizId": "*", "key": "w"}, {"bizId": "1400123456", "key": "k"}]}})
    assert "--biz-id=1400123456" in _canary_args(own)
    wildcard = render(chart, {"secret": {"keys": [{"bizId": "*", "key": "w"}]}})
    assert "--biz-id=1400000000" in _canary_args(wildcard)
    chosen = render(
        chart, {"canary": {"bizId": 1400999999}, "secret": {"keys": [{"bizId": "1400123456", "key": "k"}]}}
    )
    assert "--biz-id=1400999999" in _canary_args(chosen)


# -- the online check (helm test) ------------------------------------------------------------


def _check_pod(out: Rendered) -> dict[str, Any]:
    (pod,) = [d for d in out.of_kind("Pod") if d["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    return pod


@pytest.mark.parametrize("scenario", SCENARIO_PARAMS)
def test_helm_test_runs_the_online_check_with_the_deployment_s_settings_and_secrets(
    chart: helm.Chart, scenario: Path | None
) -> None:
    out = render(chart, scenario_values(scenario))
    pod = _check_pod(out)
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["serve", "--check", "--online"]
    assert container["image"] == out.container["image"]
    assert container["env"] == out.container["env"]  # the same settings, Redis, extraEnv
    deployment_pod = out.one("Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for m in out.container["volumeMounts"]:
        if m["name"] != "state":  # the snapshot stays the service's own
            assert mounts[m["name"]] == m
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for v in deployment_pod["volumes"]:
        if v["name"] != "state":
            assert volumes[v["name"]] == v
    assert container["securityContext"] == out.container["securityContext"]
    assert pod["spec"]["restartPolicy"] == "Never"
    # Out of every Service's and the PodDisruptionBudget's selector: it never gets a callback.
    labels = pod["metadata"]["labels"]
    for svc in out.of_kind("Service"):
        assert not svc["spec"]["selector"].items() <= labels.items()


def test_the_online_check_can_be_left_out(chart: helm.Chart) -> None:
    out = render(chart, {"onlineCheck": {"enabled": False}})
    assert [d for d in out.of_kind("Pod")] == []


# -- COS, and the production example ----------------------------------------------------------


def test_cos_section_sets_the_bucket_and_passes_the_api_key_from_a_secret(chart: helm.Chart) -> None:
    out = render(
        chart,
        {
            "cos": {
                "bucket": "gme-records-1250000000",
                "region": "ap-shanghai",
                "endpoint": "https://cos.internal.test",
                "existingSecret": "cam-key",
            }
        },
    )
    env = out.env
    assert (
        env["GME_RECWATCH_COS_BUCKET"],
        env["GME_RECWATCH_COS_REGION"],
        env["GME_RECWATCH_COS_ENDPOINT"],
    ) == ("gme-records-1250000000", "ap-shanghai", "https://cos.internal.test")
    assert env["TENCENTCLOUD_SECRET_ID"] == {"secretKeyRef": {"name": "cam-key", "key": "secret-id"}}
    assert env["TENCENTCLOUD_SECRET_KEY"] == {"secretKeyRef": {"name": "cam-key", "key": "secret-key"}}
    loaded = settings.load({k: v for k, v in env.items() if isinstance(v, str)})
    assert loaded.cos_enabled and loaded.cos_bucket == "gme-records-1250000000"
    assert "TENCENTCLOUD_SECRET_ID" not in render(chart).env  # anonymous unless a Secret is named


def test_cos_buckets_per_app_become_a_mounted_file_the_service_reads(chart: helm.Chart) -> None:
    from gme_recwatch.cos import parse_buckets_file

    out = render(chart, {"cos": {"region": "ap-guangzhou", "buckets": {"1400000001": "other-1250000000"}}})
    path = out.env["GME_RECWATCH_COS_BUCKETS_FILE"]
    mounts = {m["name"]: m["mountPath"] for m in out.container["volumeMounts"]}
    assert path == mounts["cos-buckets"] + "/buckets"
    cm = out.one("ConfigMap", f"{RELEASE}-gme-recwatch-cos-buckets")
    assert parse_buckets_file(cm["data"]["buckets"]) == {1400000001: "other-1250000000"}


def test_a_cos_bucket_without_a_region_is_refused_saying_why(chart: helm.Chart) -> None:
    with pytest.raises(Exception, match=r"cos\.bucket .*needs cos\.region"):
        chart.render({"cos": {"bucket": "gme-records-1250000000"}}, name=RELEASE)
    with pytest.raises(helm.HelmValuesError, match="'app' does not match"):  # a BizID, quoted
        chart.render({"cos": {"region": "ap-guangzhou", "buckets": {"app": "b-1250000000"}}}, name=RELEASE)


def test_the_production_example_wires_every_part(chart: helm.Chart) -> None:
    """ci/production-values.yaml: Redis with a password Secret, COS with its key from a Secret,
    kube-prometheus-stack labels, Ingress with TLS, canary, PDB; and the service accepts the
    configuration it renders."""
    out = render(chart, scenario_values(CHART / "ci" / "production-values.yaml"))
    env = out.env
    assert env["GME_RECWATCH_REDIS_URL"].startswith("redis://")
    assert env["GME_RECWATCH_REDIS_PASSWORD_FILE"] == "/etc/gme-recwatch/redis/password"
    assert env["TENCENTCLOUD_SECRET_KEY"]["secretKeyRef"]["name"] == "recwatch-cos"
    assert out.one("Deployment")["spec"]["replicas"] == 3
    assert out.one("Ingress")["spec"]["tls"][0]["hosts"] == ["recwatch.example.com"]
    assert out.one("PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert out.of_kind("CronJob") and out.of_kind("NetworkPolicy")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert out.one(kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not out.of_kind("Secret")  # the keyring is the user's own Secret
    # `helm test`'s online check reaches the same bucket with the same key and buckets file.
    (check,) = out.of_kind("Pod")
    check_env = {e["name"]: e.get("value", e.get("valueFrom")) for e in check["spec"]["containers"][0]["env"]}
    for name in (
        "GME_RECWATCH_COS_BUCKET",
        "GME_RECWATCH_COS_BUCKETS_FILE",
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
    ):
        assert check_env[name] == env[name], name
    assert "cos-buckets" in {m["name"] for m in check["spec"]["containers"][0]["volumeMounts"]}
    loaded = settings.load({k: v for k, v in env.items() if isinstance(v, str)})
    assert loaded.cos_enabled and loaded.redis_url and loaded.keys_file


def test_the_production_example_is_quiet_on_day_one(chart: helm.Chart) -> None:
    """ci/production-values.yaml: the canary signs for a BizID it names (the keyring Secret's),
    the inhibit rules are installed for kube-prometheus-stack's Alertmanager, and the
    NetworkPolicy admits callbacks only from the ingress controller's namespace."""
    values = scenario_values(CHART / "ci" / "production-values.yaml")
    out = render(chart, values)
    assert values["secret"]["existingSecret"] and values["canary"]["bizId"] > 0
    assert f"--biz-id={values['canary']['bizId']}" in _canary_args(out)
    am = out.one("AlertmanagerConfig")
    assert am["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    shipped = yaml.safe_load((CHART / "files" / "alertmanager" / "inhibit-rules.yaml").read_text())
    assert am["spec"]["inhibitRules"] == shipped["inhibitRules"] and shipped["inhibitRules"]
    np = out.one("NetworkPolicy")
    callback_rule, admin_rule = np["spec"]["ingress"]
    assert callback_rule["ports"] == [{"port": "callback", "protocol": "TCP"}]
    assert callback_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    assert admin_rule["ports"] == [{"port": "admin", "protocol": "TCP"}]
    # Without the BizID the same file would not render at all.
    del values["canary"]["bizId"]
    with pytest.raises(Exception, match=r"canary\.bizId is required"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_the_chart_readme_renders_the_production_example_offline(chart: helm.Chart) -> None:
    """The README's `helm template` command: no cluster, the production values; what it renders
    (here through helm-python-sdk, the same engine) is valid Kubernetes and the CRDs' fields."""
    import shlex

    readme = (CHART / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if x.startswith("helm template ")]
    words = shlex.split(line.split(">")[0])
    assert words[:4] == ["helm", "template", "recwatch", "./helm/gme-recwatch"]
    assert "--kube-context" not in words and "--validate" not in words  # offline: no API server
    namespace = words[words.index("-n") + 1]
    values = yaml.safe_load((ROOT / words[words.index("-f") + 1]).read_text())
    raw = chart.render(values, name=words[2], namespace=namespace, is_install=True)
    docs = [
        d
        for path, text in sorted(raw.items())
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "CronJob", "NetworkPolicy", "AlertmanagerConfig", "PrometheusRule"} <= kinds
    for doc in docs:
        crd_check = CRD_VALIDATORS.get((doc["apiVersion"], doc["kind"]))
        if crd_check is not None:
            crd_check(doc)
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
