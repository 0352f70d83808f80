"""tagfence's own checkov checks for its Bicep (run by scripts/infra_gate.py).

checkov loads every module in this folder through `--external-checks-dir`; the folder needs its
`__init__.py`, or checkov silently loads nothing (the gate also fails when any id below is missing
from checkov's results).

The checks read values as checkov's Bicep parser (pycep) gives them: literals as Python values,
references and expressions as strings or nested dicts. A value that is not the expected literal
fails, so each setting must be written as a literal in the template.
"""

from __future__ import annotations

from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


def _body(conf: dict[str, Any]) -> dict[str, Any]:
    """The resource body, unwrapping `= if (…) {…}` (and loop) wrappers."""
    while isinstance(conf, dict) and "config" in conf and ("condition" in conf or "loop_type" in conf):
        conf = conf["config"]
    return conf if isinstance(conf, dict) else {}


def _properties(conf: dict[str, Any]) -> dict[str, Any]:
    properties = _body(conf).get("properties")
    return properties if isinstance(properties, dict) else {}


def _get(mapping: dict[str, Any], key: str) -> Any:
    """A key, case-insensitively (ARM property names are case-insensitive)."""
    for name, value in mapping.items():
        if isinstance(name, str) and name.lower() == key.lower():
            return value
    return None


class RoleAssignmentSetsPrincipalType(BaseResourceCheck):
    """Without principalType, ARM looks the principal up in Entra ID, and an identity created in
    the same deployment may not have replicated yet (PrincipalNotFound)."""

    def __init__(self) -> None:
        super().__init__(
            name="Role assignments set principalType",
            id="CKV_TAGFENCE_1",
            categories=(CheckCategories.IAM,),
            supported_resources=("Microsoft.Authorization/roleAssignments",),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        value = _get(_properties(conf), "principalType")
        if value is None or (isinstance(value, str) and not value.strip()):
            return CheckResult.FAILED
        return CheckResult.PASSED


class StorageDisallowsSharedKey(BaseResourceCheck):
    """Entra ID only: `allowSharedKeyAccess: false` (the default is true)."""

    def __init__(self) -> None:
        super().__init__(
            name="Storage accounts disallow shared key access",
            id="CKV_TAGFENCE_2",
            categories=(CheckCategories.IAM,),
            supported_resources=("Microsoft.Storage/storageAccounts",),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        value = _get(_properties(conf), "allowSharedKeyAccess")
        return CheckResult.PASSED if value is False else CheckResult.FAILED


class HttpsOnly(BaseResourceCheck):
    """Storage: `supportsHttpsTrafficOnly: true`; sites: `httpsOnly: true` (both written out)."""

    def __init__(self) -> None:
        super().__init__(
            name="Storage accounts and sites accept HTTPS only",
            id="CKV_TAGFENCE_3",
            categories=(CheckCategories.NETWORKING,),
            supported_resources=("Microsoft.Storage/storageAccounts", "Microsoft.Web/sites"),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        key = "httpsOnly" if self.entity_type == "Microsoft.Web/sites" else "supportsHttpsTrafficOnly"
        value = _get(_properties(conf), key)
        return CheckResult.PASSED if value is True else CheckResult.FAILED


class MinimumTls12(BaseResourceCheck):
    """TLS 1.2 or newer: storage `minimumTlsVersion`; sites `siteConfig.minTlsVersion` (and
    `scmMinTlsVersion` when given)."""

    STORAGE = {"TLS1_2", "TLS1_3"}
    SITES = {"1.2", "1.3"}

    def __init__(self) -> None:
        super().__init__(
            name="Storage accounts and sites require TLS 1.2 or newer",
            id="CKV_TAGFENCE_4",
            categories=(CheckCategories.ENCRYPTION,),
            supported_resources=("Microsoft.Storage/storageAccounts", "Microsoft.Web/sites"),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        properties = _properties(conf)
        if self.entity_type == "Microsoft.Storage/storageAccounts":
            ok = _get(properties, "minimumTlsVersion") in self.STORAGE
            return CheckResult.PASSED if ok else CheckResult.FAILED
        site_config = _get(properties, "siteConfig")
        if not isinstance(site_config, dict):
            return CheckResult.FAILED
        if str(_get(site_config, "minTlsVersion")) not in self.SITES:
            return CheckResult.FAILED
        scm = _get(site_config, "scmMinTlsVersion")
        if scm is not None and str(scm) not in self.SITES:
            return CheckResult.FAILED
        return CheckResult.PASSED


class ApplicationInsightsEntraOnly(BaseResourceCheck):
    """Telemetry with Entra authentication only: `DisableLocalAuth: true`."""

    def __init__(self) -> None:
        super().__init__(
            name="Application Insights disables local (instrumentation key) authentication",
            id="CKV_TAGFENCE_5",
            categories=(CheckCategories.IAM,),
            supported_resources=("Microsoft.Insights/components",),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        value = _get(_properties(conf), "DisableLocalAuth")
        return CheckResult.PASSED if value is True else CheckResult.FAILED


class StorageDisallowsPublicBlobs(BaseResourceCheck):
    """No anonymous blob access: `allowBlobPublicAccess: false`."""

    def __init__(self) -> None:
        super().__init__(
            name="Storage accounts disallow anonymous blob access",
            id="CKV_TAGFENCE_6",
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_resources=("Microsoft.Storage/storageAccounts",),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        value = _get(_properties(conf), "allowBlobPublicAccess")
        return CheckResult.PASSED if value is False else CheckResult.FAILED


role_assignment_sets_principal_type = RoleAssignmentSetsPrincipalType()
storage_disallows_shared_key = StorageDisallowsSharedKey()
https_only = HttpsOnly()
minimum_tls_12 = MinimumTls12()
application_insights_entra_only = ApplicationInsightsEntraOnly()
storage_disallows_public_blobs = StorageDisallowsPublicBlobs()
