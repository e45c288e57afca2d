"""The Helm chart renders with Helm's own engine and every manifest validates.

Rendering and linting go through ``helm-python-sdk``, which bundles Helm v4 as a library, so
no ``helm`` binary or cluster is needed. Core Kubernetes kinds are validated with
``kubernetes-validate`` against the schemas it ships (strict: an unknown field fails), for
Kubernetes ``KUBE_VERSIONS``. ServiceMonitor is a CRD (monitoring.coreos.com/v1) that those
schemas do not cover, so it is checked structurally here instead.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from backends.discovery_config import DnsDiscoveryConfig, KubernetesDiscoveryConfig
from policies.document import SGLangBackendConfig
from policies.loader import parse_policy

CHART = Path(__file__).resolve().parents[2] / "helm" / "switchyard"
KUBE_VERSIONS = ("1.25.0", "1.30.0")
"""The chart's minimum (Chart.yaml kubeVersion) and a widely deployed release."""
RELEASE, NAMESPACE = "demo", "llm"
FULLNAME = f"{RELEASE}-switchyard"
SECRET_VALUE = "sk-live-not-for-configmaps-8c1f"

ALL_ON: dict[str, Any] = {
    "existingSecret": "provider-keys",
    "redis": {"bundled": {"enabled": True}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    "autoscaling": {"enabled": True, "metric": "pods",
                    "pods": {"name": "switchyard_requests_in_flight", "averageValue": "16"}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "sglang": {"enabled": True, "replicas": 2, "policyModel": "qwen-7b",
               "servedModelName": "qwen-7b", "cache": {"size": "50Gi"},
               "apiKey": {"secretKey": "SGLANG_API_KEY"}},
}


API_DISCOVERY: dict[str, Any] = {**ALL_ON, "sglang": {**ALL_ON["sglang"], "discovery": {"mode": "kubernetes"}}}
"""Everything on, with the SGLang pods found through the Kubernetes API (ServiceAccount and RBAC)."""


def _import_or_skip(name: str, package: str) -> ModuleType:
    """Import a tool the test needs; skip with the precise reason if it cannot run here."""
    try:
        return __import__(name)
    except ImportError as exc:
        pytest.skip(f"{package} is not installed ({exc}); pip install -e '.[test]'",
                    allow_module_level=True)
    except Exception as exc:  # helm-python loads its native library at import  # noqa: BLE001
        pytest.skip(f"{package} is installed but cannot run here: {type(exc).__name__}: {exc}",
                    allow_module_level=True)


helm = _import_or_skip("helm_python", "helm-python-sdk")
kubernetes_validate = _import_or_skip("kubernetes_validate", "kubernetes-validate")


# -- rendering helpers -------------------------------------------------------------------------

def render(values: dict[str, Any] | None = None, chart: Path = CHART) -> dict[str, str]:
    """Template path -> rendered text, by Helm's engine, as `helm template` would."""
    loaded = helm.Chart.load(str(chart))
    try:
        return dict(loaded.render(values or {}, name=RELEASE, namespace=NAMESPACE))
    finally:
        loaded.close()


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (NOTES.txt and empty documents left out)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    names = [d["metadata"]["name"] for d in docs if d["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind} {name}, got {names}"
    return matches[0]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (match,) = [c for c in containers if c["name"] == name]
    return match


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def policy_text(docs: list[dict[str, Any]]) -> str:
    text = find(docs, "ConfigMap", FULLNAME)["data"]["policy.yaml"]
    assert isinstance(text, str)
    return text


def named_port(c: dict[str, Any], port: str | int) -> int:
    """A probe or Service port given by name, resolved to the container's number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return int(number)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return manifests(render())


@pytest.fixture(scope="module")
def all_on_docs() -> list[dict[str, Any]]:
    return manifests(render(ALL_ON))


# -- lint and schemas --------------------------------------------------------------------------

def lint_problems(values: dict[str, Any] | None, chart: Path = CHART) -> list[str]:
    """Lint findings at warning level and above (strict lint: warnings count)."""
    report = helm.lint(str(chart), values or {}, strict=True)
    found = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return found + list(report["errors"])


@pytest.mark.parametrize("values", [None, ALL_ON, API_DISCOVERY], ids=["default", "all_on", "api_discovery"])
def test_chart_lints_clean(values: dict[str, Any] | None) -> None:
    assert lint_problems(values) == []


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    """The lint check above is not vacuous: a template error is reported."""
    broken = tmp_path / "switchyard"
    shutil.copytree(CHART, broken)
    with (broken / "templates" / "service.yaml").open("a") as f:
        f.write("  broken: {{ .Values.no.such.value }}\n")
    assert any("nil pointer" in problem for problem in lint_problems(None, broken))


def structural_servicemonitor_problems(doc: dict[str, Any]) -> list[str]:
    """The fields of monitoring.coreos.com/v1 ServiceMonitor this chart sets, checked by hand:
    kubernetes-validate ships only core schemas, not the Prometheus Operator's CRDs."""
    spec = doc.get("spec", {})
    problems = [] if doc.get("metadata", {}).get("name") else ["metadata.name missing"]
    if not isinstance(spec.get("selector", {}).get("matchLabels"), dict):
        problems.append("spec.selector.matchLabels must be a mapping")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        return [*problems, "spec.endpoints must be a non-empty list"]
    allowed = {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"}
    for index, endpoint in enumerate(endpoints):
        if set(endpoint) - allowed:
            problems.append(f"spec.endpoints[{index}]: unexpected {sorted(set(endpoint) - allowed)}")
        if not isinstance(endpoint.get("port"), str):
            problems.append(f"spec.endpoints[{index}].port must name a Service port")
        if not str(endpoint.get("path", "")).startswith("/"):
            problems.append(f"spec.endpoints[{index}].path must be absolute")
    return problems


def validate_all(docs: list[dict[str, Any]], version: str) -> Iterator[str]:
    """One line per problem; an empty iteration means every manifest is valid."""
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            yield from (f"{where}: {p}" for p in structural_servicemonitor_problems(doc))
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            yield f"{where} (k8s {version}): {path}: {exc.message}"
        except kubernetes_validate.SchemaNotFoundError as exc:
            yield f"{where}: no schema ({exc.message})"


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [None, ALL_ON, API_DISCOVERY], ids=["default", "all_on", "api_discovery"])
def test_every_manifest_validates(values: dict[str, Any] | None, version: str) -> None:
    shipped = kubernetes_validate.utils.all_versions()
    if version not in shipped:
        pytest.skip(f"kubernetes-validate {kubernetes_validate.__version__} ships no schemas for "
                    f"Kubernetes {version} (it has {shipped[0]}..{shipped[-1]})")
    docs = manifests(render(values))
    assert docs
    assert list(validate_all(docs, version)) == []


def test_schema_validation_is_not_vacuous(default_docs: list[dict[str, Any]]) -> None:
    """A misspelt field and a wrong type are caught, so the test above can fail."""
    deployment = yaml.safe_load(yaml.safe_dump(find(default_docs, "Deployment", FULLNAME)))
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": {"name": "x"}, "spec": {"selector": {}, "endpoints": [{"port": 8080}]}}
    assert len(list(validate_all([monitor], KUBE_VERSIONS[-1]))) == 3


# -- the default install -----------------------------------------------------------------------

def test_default_render_has_the_gateway_only(default_docs: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in default_docs)
    assert kinds == [("ConfigMap", FULLNAME), ("Deployment", FULLNAME),
                     ("PodDisruptionBudget", FULLNAME), ("Service", FULLNAME)]


def test_gateway_container_command_probes_and_env(default_docs: list[dict[str, Any]]) -> None:
    deployment = find(default_docs, "Deployment", FULLNAME)
    gateway = container(deployment, "gateway")
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert gateway["image"] == f"switchyard:{app_version}"
    assert gateway["args"][:7] == ["serve", "--policy", "/etc/switchyard/policy.yaml",
                                   "--host", "0.0.0.0", "--port", "8080"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert gateway[probe]["httpGet"]["path"] == path
        assert named_port(gateway, gateway[probe]["httpGet"]["port"]) == 8080
    env = env_of(gateway)
    assert env["SWITCHYARD_POLICY"] == "/etc/switchyard/policy.yaml"
    assert "REDIS_URL" not in env
    assert "envFrom" not in gateway  # no secrets given, none referenced
    assert gateway["resources"]["requests"]["cpu"]


def test_gateway_runs_non_root_on_a_read_only_root(default_docs: list[dict[str, Any]]) -> None:
    deployment = find(default_docs, "Deployment", FULLNAME)
    pod = deployment["spec"]["template"]["spec"]
    gateway = container(deployment, "gateway")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    assert {m["mountPath"] for m in gateway["volumeMounts"]} == {"/etc/switchyard", "/tmp"}


def test_policy_configmap_is_mounted_for_hot_reload(default_docs: list[dict[str, Any]]) -> None:
    """A directory mount (subPath mounts never update) and no checksum that would roll pods."""
    deployment = find(default_docs, "Deployment", FULLNAME)
    pod = deployment["spec"]["template"]["spec"]
    mounts = container(deployment, "gateway")["volumeMounts"]
    (mount,) = [m for m in mounts if m["mountPath"] == "/etc/switchyard"]
    assert "subPath" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == FULLNAME
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert not [key for key in annotations if "config" in key]


def test_default_policy_is_valid_and_serves_nobody_yet(default_docs: list[dict[str, Any]]) -> None:
    policy = parse_policy(policy_text(default_docs), "default values")
    assert policy.backends["openai"].api_key_env == "OPENAI_API_KEY"
    (key,) = policy.tenants["default"].keys
    assert key.sha256 == "0" * 64  # no key hashes to this: every call is refused until replaced
    assert policy.admin_key_sha256 is None


def test_a_given_policy_replaces_the_default_whole() -> None:
    """Helm deep-merges maps: the default policy must not leak into the operator's."""
    deployment = {"backend": "claude", "model": "claude-sonnet-4-5"}
    given = {"backends": {"claude": {"kind": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"}},
             "models": {"sonnet": {"deployments": [deployment]}}}
    rendered = render({"policy": given})
    assert yaml.safe_load(policy_text(manifests(rendered))) == given
    assert "placeholder hash" not in rendered["switchyard/templates/NOTES.txt"]


def test_pdb_min_available_wins_over_the_default() -> None:
    pdb = find(manifests(render({"pdb": {"minAvailable": "50%"}})), "PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in pdb["spec"]


def test_pdb_selects_exactly_the_gateway_pods(all_on_docs: list[dict[str, Any]]) -> None:
    selector = find(all_on_docs, "PodDisruptionBudget", FULLNAME)["spec"]["selector"]["matchLabels"]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in all_on_docs if d["kind"] in ("Deployment", "StatefulSet")}
    assert {name for name, labels in pods.items() if selects(selector, labels)} == {FULLNAME}
    assert find(all_on_docs, "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"] == selector


# -- everything enabled ------------------------------------------------------------------------

def test_all_on_renders_every_component(all_on_docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in all_on_docs}
    assert kinds == {
        ("ConfigMap", FULLNAME), ("Deployment", FULLNAME), ("Service", FULLNAME),
        ("PodDisruptionBudget", FULLNAME), ("HorizontalPodAutoscaler", FULLNAME),
        ("ServiceMonitor", FULLNAME),
        ("Deployment", f"{FULLNAME}-redis"), ("Service", f"{FULLNAME}-redis"),
        ("StatefulSet", f"{FULLNAME}-sglang"), ("Service", f"{FULLNAME}-sglang-headless"),
    }  # no Secret: existingSecret is used


def test_sglang_workers_are_templated_into_the_policy(all_on_docs: list[dict[str, Any]]) -> None:
    sts = find(all_on_docs, "StatefulSet", f"{FULLNAME}-sglang")
    headless = find(all_on_docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert selects(headless["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    policy = parse_policy(policy_text(all_on_docs), "all_on values")
    backend = policy.backends["local"]
    assert isinstance(backend, SGLangBackendConfig)
    # discovered by default: the headless Service's records, so scaling needs no new policy
    assert isinstance(backend.discovery, DnsDiscoveryConfig) and backend.workers == []
    assert backend.discovery.name == f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert backend.discovery.port == named_port(container(sts, "sglang"), "http") == 30000
    static = manifests(render({**ALL_ON, "sglang": {**ALL_ON["sglang"], "discovery": {"mode": "static"}}}))
    listed = parse_policy(policy_text(static), "static values").backends["local"]
    assert isinstance(listed, SGLangBackendConfig) and listed.discovery is None
    expected = [f"http://{sts['metadata']['name']}-{i}.{headless['metadata']['name']}:30000"
                for i in range(sts["spec"]["replicas"])]
    assert [str(url).rstrip("/") for url in listed.workers] == expected
    assert len(expected) == 2
    assert policy.models["qwen-7b"].deployments[0].backend == "local"
    assert policy.models["qwen-7b"].deployments[0].model == "qwen-7b"


def launch_flags(command: list[str]) -> dict[str, str | None]:
    """``--flag value`` pairs and bare ``--switch`` flags (None) of a launch_server command."""
    flags: dict[str, str | None] = {}
    for word in command[3:]:
        if word.startswith("--"):
            flags[word] = None
            last = word
        else:
            flags[last] = word
    return flags


def test_sglang_statefulset_runs_the_official_server(all_on_docs: list[dict[str, Any]]) -> None:
    sts = find(all_on_docs, "StatefulSet", f"{FULLNAME}-sglang")
    worker = container(sts, "sglang")
    assert worker["image"].startswith("lmsysorg/sglang:")
    command = worker["command"]
    assert command[:3] == ["python3", "-m", "sglang.launch_server"]
    flags = launch_flags(command)
    # both off in SGLang by default: the gateway reads load and cached tokens through them
    assert "--enable-metrics" in flags and flags["--enable-metrics"] is None
    assert "--enable-cache-report" in flags and flags["--enable-cache-report"] is None
    values = {"sglang": {"enabled": True, "policyModel": "m", "enableMetrics": False,
                         "enableCacheReport": False}}
    plain = container(find(manifests(render(values)), "StatefulSet", f"{FULLNAME}-sglang"), "sglang")
    plain_flags = launch_flags(plain["command"])
    assert "--enable-metrics" not in plain_flags and "--enable-cache-report" not in plain_flags
    assert "--api-key" not in plain_flags and "env" not in plain  # no key configured: none required
    assert flags["--model-path"] == "Qwen/Qwen2.5-7B-Instruct"
    assert flags["--served-model-name"] == "qwen-7b"
    assert (flags["--host"], flags["--port"]) == ("0.0.0.0", "30000")
    assert named_port(worker, worker["readinessProbe"]["httpGet"]["port"]) == 30000
    assert worker["readinessProbe"]["httpGet"]["path"] == "/health"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"


def test_the_worker_key_comes_from_the_secret_and_the_gateway_sends_it() -> None:
    values = {"secrets": {"SGLANG_API_KEY": SECRET_VALUE, "OPENAI_API_KEY": "sk-other"},
              "sglang": {"enabled": True, "policyModel": "m", "apiKey": {"secretKey": "SGLANG_API_KEY"}}}
    rendered = render(values)
    docs = manifests(rendered)
    worker = container(find(docs, "StatefulSet", f"{FULLNAME}-sglang"), "sglang")
    (variable,) = [e for e in worker["env"] if e["name"] == "SWITCHYARD_WORKER_API_KEY"]
    assert variable["valueFrom"] == {"secretKeyRef": {"name": FULLNAME, "key": "SGLANG_API_KEY"}}
    # Kubernetes expands $(VAR) in a command from the container's env: the key is not in the manifest
    assert launch_flags(worker["command"])["--api-key"] == "$(SWITCHYARD_WORKER_API_KEY)"
    backend = parse_policy(policy_text(docs), "api key values").backends["local"]
    assert backend.api_key_env == "SGLANG_API_KEY"  # the gateway reads the same Secret key ...
    gateway = container(find(docs, "Deployment", FULLNAME), "gateway")
    assert gateway["envFrom"] == [{"secretRef": {"name": FULLNAME}}]  # ... as its environment
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    for path, text in rendered.items():
        if not path.endswith("/secret.yaml"):
            assert SECRET_VALUE not in text and encoded not in text, path


def test_sglang_merge_keeps_the_backends_other_settings() -> None:
    values = {"sglang": {"enabled": True, "replicas": 3, "policyBackend": "pool"},
              "policy": {"backends": {"pool": {"kind": "sglang", "workers": ["http://old:30000"],
                                               "selection": {"type": "power_of_two"},
                                               "health_path": "/health_generate"}},
                         "models": {"llama": {"deployments": [{"backend": "pool", "model": "llama"}]}}}}
    policy = parse_policy(policy_text(manifests(render(values))), "merge values")
    assert (set(policy.backends), set(policy.models)) == ({"pool"}, {"llama"})  # no default merged in
    backend = policy.backends["pool"]
    assert isinstance(backend, SGLangBackendConfig)
    assert backend.discovery is not None and "old" not in str(backend.workers)
    assert (backend.selection.type, backend.health_path) == ("power_of_two", "/health_generate")


def test_kubernetes_discovery_carries_its_rbac() -> None:
    docs = manifests(render(API_DISCOVERY))
    backend = parse_policy(policy_text(docs), "kubernetes values").backends["local"]
    assert isinstance(backend, SGLangBackendConfig) and isinstance(backend.discovery, KubernetesDiscoveryConfig)
    headless = find(docs, "Service", f"{FULLNAME}-sglang-headless")
    assert (backend.discovery.service, backend.discovery.namespace) == (headless["metadata"]["name"], NAMESPACE)
    pod = find(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    account = find(docs, "ServiceAccount", pod["serviceAccountName"])
    role = find(docs, "Role", f"{FULLNAME}-discovery")
    assert role["rules"] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                              "verbs": ["get", "list", "watch"]}]
    binding = find(docs, "RoleBinding", f"{FULLNAME}-discovery")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    # the DNS mode needs no API access: no token, no RBAC
    default = manifests(render(ALL_ON))
    assert find(default, "Deployment", FULLNAME)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert not [d for d in default if d["kind"] in ("Role", "RoleBinding", "ServiceAccount")]


def test_redis_url_points_at_the_bundled_service(all_on_docs: list[dict[str, Any]]) -> None:
    gateway = container(find(all_on_docs, "Deployment", FULLNAME), "gateway")
    url = urlsplit(env_of(gateway)["REDIS_URL"])
    service = find(all_on_docs, "Service", url.hostname or "")
    assert url.scheme == "redis"
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    redis = find(all_on_docs, "Deployment", f"{FULLNAME}-redis")
    assert selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    server = container(redis, "redis")
    assert server["image"] == "redis:7"
    assert server["args"] == ["redis-server", "--save", "", "--appendonly", "no"]


def test_an_existing_redis_url_is_passed_through() -> None:
    docs = manifests(render({"redis": {"url": "redis://cache.data:6379/2"}}))
    gateway = container(find(docs, "Deployment", FULLNAME), "gateway")
    assert env_of(gateway)["REDIS_URL"] == "redis://cache.data:6379/2"
    assert not [d for d in docs if d["metadata"]["name"].endswith("-redis")]


def test_hpa_targets_the_deployment_on_a_custom_metric(all_on_docs: list[dict[str, Any]]) -> None:
    hpa = find(all_on_docs, "HorizontalPodAutoscaler", FULLNAME)
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = find(all_on_docs, "Deployment", FULLNAME)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], deployment["kind"], deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "switchyard_requests_in_flight"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "16"}


def test_hpa_on_cpu_by_default() -> None:
    docs = manifests(render({"autoscaling": {"enabled": True}}))
    (metric,) = find(docs, "HorizontalPodAutoscaler", FULLNAME)["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu",
                                  "target": {"type": "Utilization", "averageUtilization": 70}}


def test_servicemonitor_scrapes_metrics_on_the_gateway_port(all_on_docs: list[dict[str, Any]]) -> None:
    monitor = find(all_on_docs, "ServiceMonitor", FULLNAME)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    services = [d for d in all_on_docs if d["kind"] == "Service"
                and selects(monitor["spec"]["selector"]["matchLabels"], d["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in services] == [FULLNAME]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in [p["name"] for p in services[0]["spec"]["ports"]]


def test_existing_secret_is_injected_and_no_secret_is_made(all_on_docs: list[dict[str, Any]]) -> None:
    gateway = container(find(all_on_docs, "Deployment", FULLNAME), "gateway")
    assert gateway["envFrom"] == [{"secretRef": {"name": "provider-keys"}}]
    assert not [d for d in all_on_docs if d["kind"] == "Secret"]


# -- secrets ---------------------------------------------------------------------------------

def test_provider_keys_go_to_the_secret_and_never_the_configmap() -> None:
    rendered = render({"secrets": {"OPENAI_API_KEY": SECRET_VALUE}})
    docs = manifests(rendered)
    secret = find(docs, "Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["OPENAI_API_KEY"]).decode() == SECRET_VALUE
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    for path, text in rendered.items():
        if not path.endswith("/secret.yaml"):
            assert SECRET_VALUE not in text and encoded not in text, path
    deployment = find(docs, "Deployment", FULLNAME)
    assert container(deployment, "gateway")["envFrom"] == [{"secretRef": {"name": FULLNAME}}]
    # env vars are read at start: a changed key must roll the pods
    assert "checksum/secret" in deployment["spec"]["template"]["metadata"]["annotations"]


# -- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"redis": {"url": "redis://r:6379", "bundled": {"enabled": True}}}, "exclusive"),
    ({"sglang": {"enabled": True}}, "no model in policy.models has a deployment on backend"),
    ({"sglang": {"enabled": True, "policyBackend": "openai", "policyModel": "m"}},
     "must be of kind sglang"),
    ({"sglang": {"enabled": True, "replicas": 0, "policyModel": "m"}}, "at least 1"),
    ({"autoscaling": {"enabled": True, "metric": "memory"}}, "cpu or pods"),
    ({"pdb": {"maxUnavailable": None}}, "needs maxUnavailable or minAvailable"),
    ({"secrets": {"not-an-env-name": "x"}}, "environment variable names"),
    ({"sglang": {"enabled": True, "policyModel": "m", "apiKey": {"secretKey": "K"}}},
     "there is none: set secrets.K or existingSecret"),
    ({"secrets": {"OTHER": "x"},
      "sglang": {"enabled": True, "policyModel": "m", "apiKey": {"secretKey": "K"}}},
     '"K" is not a key of secrets'),
    ({"existingSecret": "s", "sglang": {"enabled": True, "policyModel": "m",
                                        "apiKey": {"secretKey": "bad-name"}}},
     "environment variable name"),
    ({"existingSecret": "s", "policy": {"backends": {"local": {"kind": "sglang", "api_key_env": "A"}},
                                        "models": {"m": {"deployments": [{"backend": "local", "model": "m"}]}}},
      "sglang": {"enabled": True, "apiKey": {"secretKey": "B"}}},
     "must send the key the workers require"),
])
def test_bad_values_are_refused_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)
