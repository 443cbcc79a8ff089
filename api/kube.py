"""The Kubernetes client of the API: one ApiClient per use, and Kubernetes' errors in its own words."""

from __future__ import annotations

import json
import os

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from aifactory.api.config import ApiSettings


def api_client(settings: ApiSettings) -> client.ApiClient:
    """A client from the configured kubeconfig, else KUBECONFIG, else in-cluster, else ~/.kube/config."""
    path = settings.kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        return config.new_client_from_config(config_file=path)
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except ConfigException:
        return config.new_client_from_config()


def kube_message(exc: ApiException) -> str:
    """The apiserver's own message (its Status object), else the HTTP reason."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or f"Kubernetes API answered {exc.status}")
