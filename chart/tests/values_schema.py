#!/usr/bin/env python3
"""Generates chart/values.schema.json (the source of truth is this file).

    python3 chart/tests/values_schema.py > chart/values.schema.json

chart/tests/run.sh fails when the committed schema differs from this output. Every object is
closed (additionalProperties: false) so that a misspelt value fails at `helm install` instead of
being silently ignored.
"""
import json
import sys

GO_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def obj(props, required=(), desc=None, **extra):
    o = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        o["required"] = list(required)
    if desc:
        o["description"] = desc
    o.update(extra)
    return o


def s(desc=None, **kw):
    o = {"type": "string", **kw}
    if desc:
        o["description"] = desc
    return o


def b(desc=None):
    o = {"type": "boolean"}
    if desc:
        o["description"] = desc
    return o


def i(minimum=None, maximum=None, desc=None):
    o = {"type": "integer"}
    if minimum is not None:
        o["minimum"] = minimum
    if maximum is not None:
        o["maximum"] = maximum
    if desc:
        o["description"] = desc
    return o


def dur(desc=None):
    return s(desc, pattern=GO_DURATION)


def free_obj(desc=None):
    o = {"type": "object"}
    if desc:
        o["description"] = desc
    return o


def str_map(desc=None):
    o = {"type": "object", "additionalProperties": {"type": "string"}}
    if desc:
        o["description"] = desc
    return o


def arr(items=None, desc=None, **kw):
    o = {"type": "array", **kw}
    if items is not None:
        o["items"] = items
    if desc:
        o["description"] = desc
    return o


PULL_POLICY = {"type": "string", "enum": ["", "Always", "IfNotPresent", "Never"]}
COMPONENT_IMAGE = obj({"repository": s("empty: image.repository"), "tag": s("empty: image.tag")})
INT_OR_PERCENT = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^[0-9]+%$"}]}


PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def container_ports(webhook=False):
    ports = {"metrics": PORT, "health": PORT}
    if webhook:
        ports = {"webhook": PORT, **ports}
    return obj(ports, desc="ports vdbi listens on (webhookListen, metricsListen, healthListen)")


def component(config_props, enabled=False, service=False, min_replicas=0, extra=None):
    props = {
        "serviceAccountName": s("empty: the chart's default name"),
        "serviceAccount": obj({"create": b(), "annotations": str_map()}),
        "args": arr({"type": "string"}, minItems=1),
        "replicas": i(min_replicas),
        "image": COMPONENT_IMAGE,
        "imagePullPolicy": PULL_POLICY,
        "config": obj(config_props, desc="vdbi config keys specific to this component"),
        "resources": free_obj(),
        "podSecurityContext": free_obj(),
        "containerSecurityContext": free_obj(),
        "podAnnotations": str_map(),
        "podLabels": str_map(),
        "nodeSelector": str_map(),
        "tolerations": arr({"type": "object"}),
        "affinity": free_obj(),
        "antiAffinity": {"type": "string", "enum": ["soft", "hard", "none"]},
        "topologySpreadConstraints": arr({"type": "object"}),
        "priorityClassName": s(),
        "pdb": obj({"enabled": b(), "maxUnavailable": INT_OR_PERCENT}),
        "extraEnv": arr({"type": "object", "required": ["name"]}),
        "extraVolumes": arr({"type": "object", "required": ["name"]}),
        "extraVolumeMounts": arr({"type": "object", "required": ["name", "mountPath"]}),
        "containerPorts": container_ports(webhook=service),
        "updateStrategy": free_obj("Deployment strategy; empty: the chart's"),
    }
    if enabled:
        props["enabled"] = b()
    props.update(extra or {})
    if service:
        props["type"] = {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]}
        props["ports"] = arr(
            obj({"name": s(), "port": i(1, 65535), "targetPort": {"anyOf": [i(1, 65535), s()]}}, required=["port"]),
            minItems=1,
        )
    return obj(props)


configuration = obj(
    {
        "vaultAddress": s("Vault/OpenBao URL", pattern=r"^https?://[^\s]+$"),
        "vaultAuthPath": s(minLength=1),
        "logLevel": {"type": "string", "enum": ["trace", "debug", "info", "warn", "warning", "error"]},
        "kubeRole": s(minLength=1),
        "kubeRoleNri": s(),
        "kubeRoleRenewer": s(),
        "kubeRoleRevoker": s(),
        "tokenTTL": dur(),
        "vaultSecretName": s(minLength=1),
        "vaultSecretPrefix": s(minLength=1),
        "sentry": b(),
        "sentryDsn": s(),
        "sentryDsnSecret": obj({"name": s(), "key": s(minLength=1)}),
        "sentryEnvironment": s(),
        "sentrySampleRate": {"type": "number", "minimum": 0, "maximum": 1},
        "webhookFqdn": s(
            "webhook name: a DNS name of at least three segments",
            pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?){2,}$",
            maxLength=253,
        ),
        "webhookMatchLabels": s("pod label key", pattern=LABEL_KEY),
        "injectorLabel": s("pod label key", pattern=LABEL_KEY),
        "defaultEngine": s(minLength=1),
        "vaultRateLimit": i(0, desc="requests per second; 0 = unlimited"),
        "vaultRateBurst": i(1),
        "syncTTLSecond": i(1),
        "useProjectedSA": b(),
        "tokenRequestAudiences": arr(s(minLength=1)),
        "tokenRequestExpirationSeconds": i(600, 4294967296, "the apiserver refuses less than 600"),
        "vaultCA": obj({"configMapName": s(), "secretName": s(), "key": s(minLength=1)}),
        "vaultSkipVerify": b(),
        "vaultNamespace": s(),
        "vaultRequestTimeout": dur(),
        "perUuidMetrics": b(),
        "podWatchBrokenAfter": dur(),
    },
    **{
        "if": {"properties": {"useProjectedSA": {"const": True}}, "required": ["useProjectedSA"]},
        "then": {"properties": {"tokenRequestAudiences": {"minItems": 1}}},
    },
)

schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "vdbi chart values",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "global": free_obj("accepted for use as a subchart; unused"),
        "nameOverride": s(),
        "fullnameOverride": s(maxLength=52),
        "commonLabels": str_map(),
        "image": obj(
            {
                "repository": s(minLength=1),
                "tag": s(),
                "digest": s(pattern=r"^$|^sha256:[a-f0-9]{64}$"),
                "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
            }
        ),
        "imagePullSecrets": arr(obj({"name": s(minLength=1)}, required=["name"])),
        "hostNetwork": b("every vdbi pod in its node's network namespace"),
        "vaultDbInjector": obj(
            {
                "configuration": configuration,
                "injector": component(
                    {
                        "webhookMaxBodyBytes": i(1024),
                        "certReloadInterval": dur(),
                        "maxDbConfigsPerPod": i(1),
                        "maxAnnotationBytes": i(1024),
                        "readinessVaultGrace": dur(),
                    },
                    enabled=True,
                    service=True,
                    min_replicas=1,
                    extra={
                        "clientAuth": obj(
                            {
                                "enabled": b(),
                                "caSecretName": s(),
                                "caKey": s(minLength=1),
                                "allowedNames": arr({"type": "string", "minLength": 1}),
                            },
                            desc="Webhook caller authentication (client certificates)",
                        )
                    },
                ),
                "renewer": component({"renewerConcurrency": i(1), "renewHorizonCycles": i(1)}),
                "revoker": component(
                    {
                        "revokeTerminatedPods": b(),
                        "revokerSweepInterval": dur(),
                        "revokerUnseenGrace": dur(),
                        "orphanLeaseGrace": dur(),
                        "orphanLeaseDiscovery": {"type": "string", "enum": ["off", "report", "revoke"]},
                        "orphanLeaseRoles": arr(s("<mount>/<role>", pattern=r"^[^/\s]+(/[^/\s]+)+$")),
                    }
                ),
            }
        ),
        "nri": obj(
            {
                "enabled": b(),
                "serviceAccountName": s(),
                "serviceAccount": obj({"create": b(), "annotations": str_map()}),
                "image": COMPONENT_IMAGE,
                "imagePullPolicy": PULL_POLICY,
                "containerPorts": container_ports(),
                "pluginName": s("empty: the release fullname", pattern=r"^[a-zA-Z0-9_.+-]*$"),
                "pluginIndex": s("two digits, unique per node", pattern=r"^[0-9]{2}$"),
                "fetchTimeout": dur(),
                "sweepInterval": dur(),
                "prewarmer": obj({"enabled": b(), "maxConcurrent": i(1)}),
                "socketDir": s(pattern=r"^/"),
                "resources": free_obj(),
                "tolerations": arr({"type": "object"}),
                "nodeSelector": str_map(),
                "affinity": free_obj(),
                "priorityClassName": s(),
                "updateStrategy": free_obj(),
                "podAnnotations": str_map(),
                "podLabels": str_map(),
                "containerSecurityContext": free_obj(),
                "extraEnv": arr({"type": "object", "required": ["name"]}),
                "extraVolumes": arr({"type": "object", "required": ["name"]}),
                "extraVolumeMounts": arr({"type": "object", "required": ["name", "mountPath"]}),
            }
        ),
        "webhook": obj(
            {
                "timeoutSeconds": i(1, 30),
                "admissionTimeout": s("empty, or seconds/milliseconds below timeoutSeconds", pattern=r"^$|^[0-9]+(ms|s)$"),
                "reinvocationPolicy": {"type": "string", "enum": ["Never", "IfNeeded"]},
                "namespaceSelector": obj(
                    {
                        "excludeNamespaces": arr(s(pattern=DNS_LABEL)),
                        "excludeReleaseNamespace": b(),
                        "matchLabels": str_map(),
                    }
                ),
                "annotations": str_map(),
                "url": s("empty (the Service), or the https URL of clientConfig.url", pattern=r"^(https://\S+)?$"),
                "tls": obj(
                    {
                        "mode": {"type": "string", "enum": ["generate", "certManager", "secret"]},
                        "generate": obj(
                            {
                                "caValidityDays": i(1),
                                "certValidityDays": i(1),
                                "renewBeforeDays": i(0),
                                "ipAddresses": arr(s("IPv4 or IPv6 address", pattern=r"^[0-9a-fA-F.:]+$")),
                                "extraDnsNames": arr(s(minLength=1)),
                            }
                        ),
                        "certManager": obj(
                            {
                                "issuerRef": obj({"name": s(minLength=1), "kind": s(), "group": s()}),
                                "caDuration": dur(),
                                "duration": dur(),
                                "renewBefore": dur(),
                            }
                        ),
                        "secret": obj({"name": s(), "caBundle": s()}),
                    }
                ),
            }
        ),
        "rbac": obj(
            {
                "create": b(),
                "authDelegator": b(),
                "tokenRequest": obj({"namespaces": arr(s(pattern=DNS_LABEL))}),
            }
        ),
        "metrics": obj({"service": obj({"enabled": b()}), "podAnnotations": b()}),
        "serviceMonitor": obj(
            {
                "enabled": b(),
                "labels": str_map(),
                "interval": dur(),
                "scrapeTimeout": dur(),
                "relabelings": arr({"type": "object"}),
                "metricRelabelings": arr({"type": "object"}),
            }
        ),
        "prometheusRule": obj({"enabled": b(), "labels": str_map(), "annotations": str_map()}),
        "grafanaDashboard": obj(
            {"enabled": b(), "namespace": s(), "labels": str_map(), "annotations": str_map()}
        ),
        "networkPolicy": obj(
            {
                "enabled": b(),
                "webhookFrom": arr({"type": "object"}),
                "metricsFrom": arr({"type": "object"}),
                "egress": obj({"enabled": b(), "to": arr({"type": "object"})}),
            }
        ),
    },
}

json.dump(schema, sys.stdout, indent=2, ensure_ascii=False)
sys.stdout.write("\n")
