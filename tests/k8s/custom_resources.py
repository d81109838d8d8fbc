"""Validation of the kinds kubernetes_validate does not know: KEDA's ScaledObject against a
minimal schema kept here (schemas/scaledobject.keda.sh.yaml), and the job's own DataflowScale
against the CustomResourceDefinition rendered with it (which kubernetes_validate checks itself)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

SCHEMAS = Path(__file__).parent / "schemas"
SCALED_OBJECT = yaml.safe_load((SCHEMAS / "scaledobject.keda.sh.yaml").read_text())


def closed(schema: dict) -> dict:
    """A CRD's structural schema as the API server applies it to a resource: an object's fields
    beyond its `properties` are unknown (pruned, or refused by kubectl's strict field validation)
    unless it preserves them; `metadata` is the API server's own."""
    schema = dict(schema)
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
        schema["properties"] = {name: prop if name == "metadata" else closed(prop)
                                for name, prop in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        schema["items"] = closed(schema["items"])
    return schema


def validate_custom_resource(resource: dict, rendered: list[dict]) -> bool:
    """Validate `resource` if it is a custom kind (False if it is not one); `rendered` holds the
    CRDs it may be an instance of. Fails the test naming the resource and the path."""
    group = resource["apiVersion"].rpartition("/")[0]
    if (resource["apiVersion"], resource["kind"]) == ("keda.sh/v1alpha1", "ScaledObject"):
        schema = SCALED_OBJECT
    else:
        crds = [crd for crd in rendered if crd["kind"] == "CustomResourceDefinition"
                and crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == resource["kind"]]
        if not crds:
            return False
        (crd,) = crds
        version = resource["apiVersion"].rpartition("/")[2]
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
        schema = closed(served["schema"]["openAPIV3Schema"])
    try:
        jsonschema.validate(resource, schema)
    except jsonschema.ValidationError as exc:
        pytest.fail(f"{resource['kind']}/{resource['metadata']['name']} invalid: {exc.message} at {list(exc.path)}")
    return True
