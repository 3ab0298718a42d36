"""The chart's alerts, evaluated by a real Prometheus (``tests/prometheus``) on what the
operator exports: every rule loads and evaluates without error, and a failed build, a
stalled service, an operator waiting for its Lease and one gone raise their alerts, with the
labels their annotations name.

The rule file is the PrometheusRule's ``spec.groups`` as it stands, which is what the
Prometheus Operator writes into the rule files it mounts (prometheus-operator
``pkg/prometheus/server/rules.go``, the groups marshalled unchanged); the operator's
metrics are served by the same ``prometheus_client.start_http_server`` its ``--metrics-port``
uses, from the running operator's registry."""

from __future__ import annotations

import contextlib
import copy

import yaml

from ..support.cluster import chart_manifests
from ..support.prometheus import PrometheusServer, operator_metrics, until
from .test_operator import MISTRAL, NS


def _alerts(prometheus: PrometheusServer) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for alert in prometheus.api("alerts")["alerts"]:
        found.setdefault(alert["labels"]["alertname"], []).append(alert)
    return found


async def test_the_charts_alerts_fire_on_what_the_operator_exports(make_sandbox, prometheus_binaries, tmp_path):
    [rule] = [obj for obj in chart_manifests({"prometheusRule": {"enabled": True},
                                              "metrics": {"serviceMonitor": {"enabled": True}}})
              if obj["kind"] == "PrometheusRule"]
    rules = tmp_path / "kiln.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            fail_builds=lambda job: True) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        sb.start_kubelet()
        await sb.wait_for(lambda: sb.operator_context is not None, what="the operator's context")
        servers = contextlib.ExitStack()  # the operator's metrics endpoint and Prometheus
        server, address = servers.enter_context(operator_metrics(sb.operator_context.telemetry.registry))
        # The job label a ServiceMonitor's targets carry is their Service's name (promcfg.go,
        # generateServiceMonitorConfig: __meta_kubernetes_service_name -> job): the chart's
        # metrics Service.
        [service] = [obj for obj in chart_manifests({"metrics": {"serviceMonitor": {"enabled": True}}})
                     if obj["kind"] == "Service" and any(p["name"] == "metrics" for p in obj["spec"]["ports"])]
        prometheus = servers.enter_context(PrometheusServer(prometheus_binaries, [{
            "job_name": service["metadata"]["name"], "static_configs": [{"targets": [address]}]}],
            rule_files=[rules]))
        try:
            # Scraped before anything fails, as an operator is before its first failed build.
            await until(lambda: prometheus.query("up == 1"), 30, "the operator scraped")
            await sb.create(copy.deepcopy(MISTRAL))
            stalled = copy.deepcopy(MISTRAL)
            stalled["metadata"]["name"] = "no-token"
            stalled["spec"]["model"]["credentials"] = {"secretName": "missing"}
            await sb.create(stalled)

            firing = await until(lambda: [a for a in _alerts(prometheus).get("KilnEngineBuildFailed", [])
                                          if a["state"] == "firing"], 60, "KilnEngineBuildFailed firing")
            assert firing[0]["annotations"]["summary"] == "An engine build Job failed"
            # `for: 10m`: pending is the expression matching, with the service named (the
            # failed build's service is stalled too).
            [pending] = await until(lambda: [a for a in _alerts(prometheus).get("KilnServiceStalled", [])
                                             if a["labels"]["service"] == "no-token"], 60,
                                    "KilnServiceStalled pending for no-token")
            assert pending["state"] == "pending"
            assert pending["annotations"]["summary"] == f"LLMService {sb.ns(NS)}/no-token is stalled"

            groups = prometheus.api("rules")["groups"]
            evaluated = {r["name"]: r for group in groups for r in group["rules"]}
            assert set(evaluated) == {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
            assert all(r["health"] == "ok" for r in evaluated.values()), \
                {name: r.get("lastError") for name, r in evaluated.items() if r["health"] != "ok"}

            # Running but waiting for the Lease (every pod a standby): KilnOperatorNotLeading.
            assert "KilnOperatorNotLeading" not in _alerts(prometheus)
            sb.operator_context.telemetry.leader.set(0)
            [waiting] = await until(lambda: _alerts(prometheus).get("KilnOperatorNotLeading"), 30,
                                    "KilnOperatorNotLeading pending")
            assert waiting["state"] == "pending" and "KilnOperatorDown" not in _alerts(prometheus)

            # The operator's metrics endpoint gone: KilnOperatorDown (`for: 5m`) matches.
            server.shutdown()
            await until(lambda: _alerts(prometheus).get("KilnOperatorDown"), 30, "KilnOperatorDown pending")
            # And with no operator pod at all, when its ServiceMonitor has no target to scrape.
            with PrometheusServer(prometheus_binaries, [], rule_files=[rules]) as nothing:
                await until(lambda: _alerts(nothing).get("KilnOperatorDown"), 30,
                            "KilnOperatorDown pending without a target")
            assert sb.operator_error is None
            await sb.stop_operator()
            await sb.stop_kubelet()
        finally:
            servers.close()
