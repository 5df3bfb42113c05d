"""The deployment kit in deploy/: every file parses, Prometheus and Alertmanager accept their
configuration, the alert rules pass their promtool unit tests, the example configurations pass
the daemon's own validation, and the manifests have the shape the daemon relies on (one replica,
Recreate, a GPU, the probes, non-root, the state volume, secrets from a Secret).

Tests that need promtool or amtool skip when the binary is missing, unless
PM_TEST_PROMETHEUS=require (CI sets it): then they fail.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "persistence.rules.yml"
RULE_TESTS = PROMETHEUS / "persistence.rules.test.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
KUBERNETES = DEPLOY / "kubernetes"
STATE_DIR = "/var/lib/persistence-monitor"
CONFIG_PATH = "/etc/persistence-monitor/persistence-monitor.yaml"
SHUTDOWN_GRACE = 30  # executor.shutdown_grace's default, seconds

_PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (Debian: apt-get install {_PACKAGES[name]})"
    if os.environ.get("PM_TEST_PROMETHEUS") == "require" or (
        name == "amtool" and os.environ.get("PM_TEST_ALERTMANAGER") == "require"
    ):
        pytest.fail(f"{message}; PM_TEST_PROMETHEUS=require")
    pytest.skip(f"{message}; PM_TEST_PROMETHEUS=require fails instead")


def _run(*command: str | Path) -> str:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{output}"
    return output


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _data_files() -> list[Path]:
    files: list[Path] = []
    for folder in (DEPLOY, ROOT / "grafana"):
        if folder.is_dir():
            files += [p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml", ".json") and p.is_file()]
    return sorted(files)


# -- every file ---------------------------------------------------------------------------------


def test_the_kit_is_complete():
    for name in (
        "prometheus/prometheus.yml",
        "prometheus/persistence.rules.yml",
        "prometheus/persistence.rules.test.yml",
        "alertmanager/alertmanager.yml",
        "docker-compose.yml",
        "docker-compose.gpu.yml",
        "compose/persistence-monitor.yaml",
        "kubernetes/kustomization.yaml",
        "kubernetes/sync_rules.py",
        "Dockerfile",
        "systemd/persistence-monitor.service",
    ):
        assert (DEPLOY / name).is_file(), f"deploy/{name} is missing"


@pytest.mark.parametrize("path", _data_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_and_json_file_parses(path: Path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        json.loads(text)
    else:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        assert documents, f"{path} holds no YAML document"


# -- Prometheus ---------------------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config_and_its_rule_file():
    output = _run(_tool("promtool"), "check", "config", PROMETHEUS / "prometheus.yml")
    assert "1 rule files found" in output


def test_promtool_accepts_the_rules():
    _run(_tool("promtool"), "check", "rules", RULES)


@pytest.mark.slow  # promtool evaluates every rule over its test series
def test_the_rule_unit_tests_pass():
    _run(_tool("promtool"), "test", "rules", RULE_TESTS)


def test_prometheus_scrapes_the_monitor_and_alerts_through_alertmanager():
    config = _load(PROMETHEUS / "prometheus.yml")
    assert config["rule_files"] == [RULES.name]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "persistence-monitor")
    assert job["static_configs"][0]["targets"] == ["persistence-monitor:9775"]
    assert job["scrape_interval"] == "30s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(RULES)["groups"] for rule in group["rules"]]


def _documented_metrics() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = set(re.findall(r"^\| `(persistence_[a-z0-9_]+)` \|", readme, flags=re.MULTILINE))
    assert "persistence_score" in names, "the metrics table of README.md was not found"
    return names


def test_every_rule_is_complete_and_uses_only_real_metrics():
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "PersistenceLow",
        "PersistenceDropped",
        "EvaluationStale",
        "GridIncomplete",
        "NotificationsFailing",
        "PersistenceMonitorDown",
    }
    metrics = _documented_metrics()
    bases = set()
    for rule in rules:
        name = rule["alert"]
        assert "for" in rule, f"{name}: no `for`"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert set(rule["annotations"]) >= {"summary", "description", "runbook_url"}, name
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert anchor == f"runbook-{name.lower()}", f"{name}: runbook anchor {anchor!r}"
        bases.add(base)
        for metric in re.findall(r"\bpersistence_[a-z0-9_]+", rule["expr"]):
            assert metric in metrics, f"{name}: {metric} is not a metric of the daemon (README, Metrics)"
    assert len(bases) == 1, f"one runbook base URL for every rule, got {sorted(bases)}"
    assert any('up{job="persistence-monitor"} == 0' in r["expr"] for r in rules)
    assert any('absent(up{job="persistence-monitor"})' in r["expr"] for r in rules)


def test_every_rule_has_a_unit_test_that_fires_and_one_that_does_not():
    cases = [case for test in _load(RULE_TESTS)["tests"] for case in test["alert_rule_test"]]
    for rule in _rules():
        name = rule["alert"]
        fired = [
            alert["exp_labels"]
            for case in cases
            if case["alertname"] == name
            for alert in case.get("exp_alerts") or []
        ]
        assert any(rule["labels"].items() <= labels.items() for labels in fired), (
            f"no unit test makes {name} {rule['labels']} fire"
        )
        assert any(case["alertname"] == name and not case.get("exp_alerts") for case in cases), (
            f"no unit test checks that {name} stays quiet"
        )


# -- Alertmanager -------------------------------------------------------------------------------


def test_amtool_accepts_the_alertmanager_config():
    _run(_tool("amtool"), "check-config", ALERTMANAGER)


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical", "alertname=PersistenceDropped", "model=m"], "team-webhook,pagerduty"),
        (["severity=warning", "alertname=GridIncomplete", "model=m"], "team-webhook,slack"),
        (["severity=info", "alertname=CellDrop", "model=m"], "team-webhook"),
    ],
)
def test_alerts_are_routed_by_severity_and_all_reach_the_webhook(labels: list[str], receivers: str):
    output = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert output.strip().splitlines()[0] == receivers


def test_alertmanager_groups_inhibits_and_keeps_secrets_in_files():
    config = _load(ALERTMANAGER)
    assert config["route"]["group_by"] == ["alertname", "model"]
    inhibit = config["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert set(inhibit["equal"]) == {"alertname", "model"}
    receivers = {r["name"]: r for r in config["receivers"]}
    pagerduty = receivers["pagerduty"]["pagerduty_configs"][0]
    assert "routing_key_file" in pagerduty and "routing_key" not in pagerduty
    assert "slack_api_url_file" in config["global"]
    assert all("api_url" not in s for s in receivers["slack"]["slack_configs"])
    webhook = receivers["team-webhook"]["webhook_configs"][0]
    assert "credentials_file" in webhook["http_config"]["authorization"]


# -- docker-compose -----------------------------------------------------------------------------


def _volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source ("short syntax" volumes; the read-only flag stays on the source)."""
    targets = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        targets[target] = source + (":" + mode[0] if mode else "")
    return targets


def test_compose_runs_the_monitor_prometheus_alertmanager_and_grafana():
    compose = _load(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"persistence-monitor", "prometheus", "alertmanager", "grafana"}

    monitor = services["persistence-monitor"]
    assert monitor["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    mounts = _volume_targets(monitor)
    assert mounts[STATE_DIR] == "pm-state"
    assert mounts[posixpath.dirname(CONFIG_PATH) + "/persistence-monitor.yaml"] == (
        "./compose/persistence-monitor.yaml:ro"
    )
    assert monitor["environment"]["PM_CONFIG"] == CONFIG_PATH
    assert monitor["environment"]["PM_SERVER__API_TOKEN"].startswith("${PM_SERVER__API_TOKEN:?")
    assert "/healthz" in " ".join(monitor["healthcheck"]["test"])
    assert monitor["stop_grace_period"] == "90s"

    prometheus = _volume_targets(services["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml:ro"
    assert prometheus["/etc/prometheus/persistence.rules.yml"] == "./prometheus/persistence.rules.yml:ro"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    alertmanager = _volume_targets(services["alertmanager"])
    assert alertmanager["/etc/alertmanager/alertmanager.yml"] == "./alertmanager/alertmanager.yml:ro"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]
    grafana = _volume_targets(services["grafana"])
    assert grafana["/etc/grafana/provisioning/datasources"] == "../grafana/provisioning/datasources:ro"
    assert grafana["/etc/grafana/provisioning/dashboards"] == "../grafana/provisioning/dashboards:ro"
    assert grafana["/var/lib/grafana/dashboards"] == "../grafana/dashboards:ro"

    # Every named volume is declared; every relative file or folder in this repository exists.
    for name, service in services.items():
        for source in _volume_targets(service).values():
            source = source.removesuffix(":ro")
            if source.startswith("${"):
                continue
            if not source.startswith("."):
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
            elif not source.startswith("../grafana") or (ROOT / "grafana" / "provisioning").exists():
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_compose_variables_are_documented_in_the_env_example():
    required = set()
    for path in DEPLOY.glob("docker-compose*.yml"):
        required |= set(re.findall(r"\$\{([A-Z0-9_]+):\?", path.read_text(encoding="utf-8")))
    example = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    defined = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert required and required <= defined


def test_the_gpu_override_reserves_every_nvidia_gpu_for_the_monitor():
    override = _load(DEPLOY / "docker-compose.gpu.yml")
    assert set(override["services"]) == {"persistence-monitor"}
    devices = override["services"]["persistence-monitor"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_the_image_matches_the_manifests():
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "--uid 10001" in dockerfile
    assert f"PM_CONFIG={CONFIG_PATH}" in dockerfile
    assert f'VOLUME ["{STATE_DIR}"]' in dockerfile
    assert "EXPOSE 9775" in dockerfile


# -- the example configurations pass the daemon's own validation ------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.upper().startswith("PM_"):
            monkeypatch.delenv(key)
    return monkeypatch


def _validate_example(path: Path, tmp_path: Path) -> Any:
    from monitor.settings import settings_from_mapping

    data = _load(path)
    # Weights and local snapshot folders are mounted at deploy time: stand-ins here.
    for model in data["models"]:
        weights = tmp_path / "models" / Path(model["weights"]).name
        weights.parent.mkdir(exist_ok=True)
        weights.write_bytes(b"")
        model["weights"] = str(weights)
    for task in data["tasks"]:
        for dataset in task["datasets"]:
            if dataset["source"].startswith("/"):
                dataset["source"] = str(tmp_path / "snapshots" / dataset["name"])
                Path(dataset["source"]).mkdir(parents=True)
    return settings_from_mapping(data, base_dir=tmp_path, origin=str(path))


@pytest.mark.parametrize(
    "path",
    [DEPLOY / "compose" / "persistence-monitor.yaml", KUBERNETES / "persistence-monitor.yaml"],
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_the_example_configurations_are_valid(path: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch):
    settings = _validate_example(path, tmp_path)
    assert settings.server.api_token is None  # from the environment, never in the file
    assert settings.executor.shutdown_grace == SHUTDOWN_GRACE


def test_the_secret_gives_the_daemon_its_token_and_usable_notifiers(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
):
    from monitor.notifiers import build_notifiers

    secret = _kubernetes()["Secret"]["stringData"]
    assert "replace" in secret["api-token"].lower(), "the Secret in git holds placeholders only"
    clean_env.setenv("PM_SERVER__API_TOKEN", secret["api-token"])
    clean_env.setenv("PM_ALERTS__NOTIFIERS", secret["alerts-notifiers"])
    settings = _validate_example(KUBERNETES / "persistence-monitor.yaml", tmp_path)
    assert settings.server.api_token is not None
    kinds = [n.kind for n in settings.alerts.notifiers]
    assert "webhook" in kinds
    with httpx.Client() as client:
        assert list(build_notifiers(settings.alerts.notifiers, client)) == [
            n.name for n in settings.alerts.notifiers
        ]


# -- Kubernetes ---------------------------------------------------------------------------------


def _kubernetes() -> dict[str, Any]:
    """The objects of the kustomization's resources by kind (the PVCs as a list)."""
    kustomization = _load(KUBERNETES / "kustomization.yaml")
    objects: dict[str, Any] = {"PersistentVolumeClaim": []}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / resource).read_text(encoding="utf-8")):
            if document is None:
                continue
            if document["kind"] == "PersistentVolumeClaim":
                objects["PersistentVolumeClaim"].append(document)
            else:
                assert document["kind"] not in objects, f"two {document['kind']} objects"
                objects[document["kind"]] = document
    return objects


def test_the_kustomization_generates_the_config_and_lists_every_resource():
    kustomization = _load(KUBERNETES / "kustomization.yaml")
    assert kustomization["namespace"] == "persistence-monitor"
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource
    generator = kustomization["configMapGenerator"][0]
    assert generator["files"] == [posixpath.basename(CONFIG_PATH)]
    assert set(_kubernetes()) >= {
        "Namespace",
        "Deployment",
        "PersistentVolumeClaim",
        "Secret",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    }


def _container() -> dict[str, Any]:
    return _kubernetes()["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def test_one_daemon_per_store_on_a_gpu():
    deployment = _kubernetes()["Deployment"]["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}
    assert _container()["resources"]["limits"]["nvidia.com/gpu"] == 1
    # SIGTERM lets the running fine-tune finish within the shutdown grace: give it a margin.
    assert deployment["template"]["spec"]["terminationGracePeriodSeconds"] >= SHUTDOWN_GRACE + 30


def test_the_probes_use_healthz_and_readyz():
    container = _container()
    probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert all(p["httpGet"]["port"] == "http" for p in probes.values())
    startup = probes["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300, "a generous start-up"
    assert container["ports"] == [{"name": "http", "containerPort": 9775, "protocol": "TCP"}]


def test_the_pod_runs_as_the_image_user_on_a_read_only_root():
    pod = _kubernetes()["Deployment"]["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["fsGroup"] == 10001
    container = _container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_the_state_config_and_secrets_are_wired():
    objects = _kubernetes()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = _container()
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    # The state on the PVC, where PM_STATE_DIR points.
    assert env["PM_STATE_DIR"]["value"] == STATE_DIR
    state = volumes[mounts[STATE_DIR]["name"]]
    claims = {c["metadata"]["name"] for c in objects["PersistentVolumeClaim"]}
    assert state["persistentVolumeClaim"]["claimName"] in claims
    assert not mounts[STATE_DIR].get("readOnly", False)

    # The config from the generated ConfigMap, where PM_CONFIG points.
    assert env["PM_CONFIG"]["value"] == CONFIG_PATH
    config = volumes[mounts[posixpath.dirname(CONFIG_PATH)]["name"]]
    generator = _load(KUBERNETES / "kustomization.yaml")["configMapGenerator"][0]
    assert config["configMap"]["name"] == generator["name"]
    assert mounts[posixpath.dirname(CONFIG_PATH)]["readOnly"] is True

    # The token and the notifier secrets from the Secret, whose keys exist.
    secret = objects["Secret"]
    for name in ("PM_SERVER__API_TOKEN", "PM_ALERTS__NOTIFIERS"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], name
        assert ref["key"] in secret["stringData"], name
    assert env["PM_SERVER__HOST"]["value"] == "0.0.0.0"


def test_the_service_monitor_scrapes_the_service_http_port():
    objects = _kubernetes()
    service, monitor = objects["Service"], objects["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    # The rules expect job="persistence-monitor": the ServiceMonitor's job is the Service's name.
    assert service["metadata"]["name"] == "persistence-monitor"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9775, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"


def test_the_prometheus_rule_holds_the_same_groups_as_the_rules_file():
    rule = _kubernetes()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == _load(RULES)["groups"]
    _run(sys.executable, KUBERNETES / "sync_rules.py", "--check")


def test_kustomize_renders_the_manifests():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its `kubectl kustomize` renders deploy/kubernetes offline)")
    rendered = list(yaml.safe_load_all(_run(kubectl, "kustomize", KUBERNETES)))
    by_kind = {d["kind"]: d for d in rendered}
    assert all(
        d["metadata"].get("namespace") == "persistence-monitor" for d in rendered if d["kind"] != "Namespace"
    )
    config_map = by_kind["ConfigMap"]["metadata"]["name"]
    assert config_map.startswith("persistence-monitor-config-")  # with the content hash
    volumes = by_kind["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": config_map}} in volumes


# -- high availability and Ray (deploy/kubernetes/ha, docker-compose.ray.yml) -----------------

HA = KUBERNETES / "ha"


def test_the_ha_overlay_runs_two_daemons_on_postgresql_and_the_grid_on_ray():
    from monitor.settings import ExecutorSettings

    kustomization = _load(HA / "kustomization.yaml")
    assert kustomization["resources"][0] == "../"
    for resource in kustomization["resources"][1:]:
        assert (HA / resource).is_file(), resource
    patch = _load(HA / "deployment-ha.yaml")
    spec = patch["spec"]
    assert spec["replicas"] == 2
    # A rollout never leaves zero daemons: the new pod stands by until the old one lets go.
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = spec["template"]["spec"]["containers"]
    assert container["name"] == _container()["name"]  # merged into the base's container
    env = {e["name"]: e for e in container["env"]}
    database = env["PM_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert database["optional"] is False and database["key"] == "database-url"
    executor = ExecutorSettings.model_validate(
        {"kind": env["PM_EXECUTOR__KIND"]["value"], "address": env["PM_EXECUTOR__ADDRESS"]["value"]}
    )
    assert executor.kind == "ray"
    head = _load(HA / "raycluster.yaml")
    assert head["kind"] == "RayCluster"
    # Ray Client on KubeRay's head Service, whose port the head container opens.
    assert executor.address == f"ray://{head['metadata']['name']}-head-svc:10001"
    ports = head["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "client", "containerPort": 10001} in ports
    # The daemons need no GPU: the patch removes the base's limit and toleration.
    removed = [
        op["path"]
        for p in kustomization["patches"]
        if "patch" in p
        for op in yaml.safe_load(p["patch"]) or []
        if isinstance(op, dict) and op.get("op") == "remove"
    ]
    assert "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu" in removed
    assert "nvidia.com/gpu" in _container()["resources"]["limits"]  # (the path exists in the base)
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["state"] and volumes["state"]["persistentVolumeClaim"] is None
    budget = _load(HA / "poddisruptionbudget.yaml")
    assert budget["spec"]["minAvailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"]
        == _kubernetes()["Deployment"]["spec"]["selector"]["matchLabels"]
    )


def test_the_raycluster_head_trains_nothing_and_the_workers_have_one_gpu_each():
    cluster = _load(HA / "raycluster.yaml")["spec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    (workers,) = cluster["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    images = {
        c["image"] for g in [cluster["headGroupSpec"], workers] for c in g["template"]["spec"]["containers"]
    }
    assert images == {_container()["image"]}  # driver and cluster: one image, one Ray version


def test_the_compose_ray_override_adds_a_head_and_a_worker_of_the_same_image():
    override = _load(DEPLOY / "docker-compose.ray.yml")["services"]
    assert set(override) == {"persistence-monitor", "ray-head", "ray-worker"}
    base = _load(DEPLOY / "docker-compose.yml")["services"]["persistence-monitor"]
    assert override["ray-head"]["image"] == override["ray-worker"]["image"] == base["image"]
    assert "ray" in override["persistence-monitor"]["build"]["args"]["EXTRAS"].split(",")
    assert "ARG EXTRAS=" in (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "--num-cpus=0" in override["ray-head"]["command"]
    monitor = override["persistence-monitor"]
    assert monitor["environment"] == {
        "PM_EXECUTOR__KIND": "ray",
        "PM_EXECUTOR__ADDRESS": "ray://ray-head:10001",
    }
    assert "--ray-client-server-port=10001" in override["ray-head"]["command"]
