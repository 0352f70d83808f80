"""Microsoft's Python SDKs, unchanged, against tagfence-emulator over https.

Run by scripts/sdk_test.sh, which starts `tagfence-emulator --tls` and sets the environment from
its env file: TAGFENCE_ARM_ENDPOINT (https), IDENTITY_ENDPOINT and IDENTITY_HEADER (the App
Service managed identity), REQUESTS_CA_BUNDLE (the emulator's CA), TAGFENCE_BIN and
TAGFENCE_WORK. The clients get the endpoint and nothing else Azure-specific: default
api-versions, default credential scopes, no `enforce_https` anywhere.

As a person scripting around tagfence would: list the vaults three ways, create one, update it,
run `tagfence apply`, edit its firewall by hand through the SDK, run `tagfence apply` again, and
check that tagfence kept the hand-made rule and wrote the selected Service Tag's ranges (read
through the Network SDK from the same emulator); then Resource Graph, serviceTagDetails and a
delete.

Then the other two kinds, each with its SDK at its default api-version (azure-mgmt-storage
25.3.0: 2026-09-01; azure-mgmt-containerregistry 15.0.0: 2025-11-01; both in the emulator's
lists): the sample storage account read through `storage_accounts.get_properties`, a person's rule
added with `storage_accounts.update` sending the whole rule set, `tagfence apply --resource`,
the rules read back (single addresses bare, the resource access and virtual network rules
untouched), a second run that sends no PATCH, and `/32` and `/31` ranges refused with 400; the
Premium sample registry read, applied, edited through `registries.begin_update` (the poller ends
on the emulator's 200) and applied again, and the Standard one refused by tagfence and unchanged;
last, one Resource Graph query over all three kinds whose firewall columns agree with the SDKs'
reads. The emulator's request log (`/_emulator/requests`, a control route) shows what was sent.
"""

import ipaddress
import json
import os
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request

from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import IPRule as RegistryIPRule
from azure.mgmt.containerregistry.models import RegistryUpdateParameters
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    IPRule,
    NetworkRuleSet,
    Sku,
    VaultCreateOrUpdateParameters,
    VaultPatchParameters,
    VaultPatchProperties,
    VaultProperties,
)
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.models import IPRule as StorageIPRule
from azure.mgmt.storage.models import StorageAccountUpdateParameters

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
GROUP = "rg-secrets"
TENANT = "00000000-0000-0000-0000-0000000000aa"
NEW_VAULT = "kv-sdk"
PERSON_RULE = "52.174.99.1/32"  # a person's own public address
STATIC_RULE = "52.1.2.3/32"  # the self-hosted agent tagfence is told about (as in README)

STORAGE_GROUP = "rg-data"
STORAGE_ACCOUNT = "sttagfenceprod"
REGISTRY_GROUP = "rg-containers"
PREMIUM_REGISTRY = "crtagfenceprod"
STANDARD_REGISTRY = "crtagfencedev"
# Storage and Container Registry take a single address bare (Storage refuses /31 and /32
# ranges); tagfence writes the static rule so there.
STORAGE_PERSON_RULE = "52.174.99.2"
REGISTRY_PERSON_RULE = "52.174.99.3"
BARE_STATIC_RULE = "52.1.2.3"

ENDPOINT = os.environ["TAGFENCE_ARM_ENDPOINT"]
WORK = os.environ["TAGFENCE_WORK"]

passed = 0


def check(condition, what):
    global passed
    if not condition:
        print(f"sdk test: FAILED: {what}", file=sys.stderr)
        print(f"sdk test: {passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"  ok  {what}")


def vault_id(name):
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
        f"/providers/Microsoft.KeyVault/vaults/{name}"
    )


def rules_of(vault):
    acls = vault.properties.network_acls
    return [rule.value for rule in (acls.ip_rules or [])] if acls else []


def resource_id(group, provider_type, name):
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{provider_type}/{name}"


STORAGE_ID = resource_id(STORAGE_GROUP, "Microsoft.Storage/storageAccounts", STORAGE_ACCOUNT)
PREMIUM_REGISTRY_ID = resource_id(REGISTRY_GROUP, "Microsoft.ContainerRegistry/registries", PREMIUM_REGISTRY)
STANDARD_REGISTRY_ID = resource_id(REGISTRY_GROUP, "Microsoft.ContainerRegistry/registries", STANDARD_REGISTRY)


def bare_form(prefixes):
    """Rules as Storage and Container Registry hold them: a /32 as its bare address, a /31 as its
    two addresses (tagfence's default `slash31 = split`, and Storage's only form)."""
    rules = set()
    for prefix in prefixes:
        network = ipaddress.ip_network(prefix)
        if network.prefixlen >= 31:
            rules.update(str(address) for address in network)
        else:
            rules.add(str(network))
    return rules


def emulator_requests(method="GET", route=None):
    """The emulator's request log (a control route, not Azure's): checks what tagfence sent."""
    context = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])
    request = urllib.request.Request(f"{ENDPOINT}/_emulator/requests", method=method)
    with urllib.request.urlopen(request, context=context, timeout=30) as answer:
        body = answer.read()
    if method != "GET":
        return None
    return [record for record in json.loads(body) if route is None or record["route"] == route]


def sdk_versions(routes):
    """The api-versions of the logged requests on these routes (the log was cleared before the SDK
    calls, so these are the SDK's)."""
    versions = []
    for record in emulator_requests():
        if record["route"] in routes:
            query = urllib.parse.parse_qs(record["query"] or "")
            versions.extend(query.get("api-version", ["(none)"]))
    return versions


def tagfence_apply_resource(resource, label, expect=0):
    """`tagfence apply --resource <id> --tag AzureDevOps --static-rule 52.1.2.3 --state-dir …
    --output json`, as a person would run it; returns (exit code, the JSON report or None, stderr)."""
    environment = dict(os.environ)
    environment.update({"TAGFENCE_LOG": "warn", "SSL_CERT_FILE": os.environ["REQUESTS_CA_BUNDLE"]})
    run = subprocess.run(
        [
            os.environ["TAGFENCE_BIN"], "apply",
            "--resource", resource,
            "--tag", "AzureDevOps",
            "--static-rule", BARE_STATIC_RULE,
            "--state-dir", os.path.join(WORK, "state"),
            "--output", "json",
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode != expect:
        print(run.stdout, run.stderr, sep="\n", file=sys.stderr)
    check(run.returncode == expect, f"tagfence apply --resource ({label}) exits {expect}")
    try:
        report = json.loads(run.stdout)
    except ValueError:
        report = None
    return run.returncode, report, run.stderr


def outcome_of(report):
    (entry,) = report["vaults"]
    return entry["outcome"]["status"], entry["wrote"]


def refusal(call):
    try:
        call()
    except HttpResponseError as error:
        return error
    return None


def tagfence_apply(label):
    environment = dict(os.environ)
    environment.update(
        {
            "TAGFENCE_VAULTS": ",".join(vault_id(name) for name in ("kv-prod", NEW_VAULT)),
            "TAGFENCE_TAGS": "AzureDevOps",
            "TAGFENCE_STATIC_RULES": STATIC_RULE,
            "TAGFENCE_STATE_DIR": os.path.join(WORK, "state"),
            "TAGFENCE_LOG": "warn",
            # tagfence trusts the emulator's CA through the platform's roots (rustls reads
            # SSL_CERT_FILE on Linux).
            "SSL_CERT_FILE": os.environ["REQUESTS_CA_BUNDLE"],
        }
    )
    run = subprocess.run(
        [os.environ["TAGFENCE_BIN"], "apply"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode != 0:
        print(run.stdout, run.stderr, sep="\n", file=sys.stderr)
    check(run.returncode == 0, f"tagfence apply ({label}) exits 0")
    return run.stdout


def main():
    credential = ManagedIdentityCredential()
    keyvault = KeyVaultManagementClient(credential, SUBSCRIPTION, base_url=ENDPOINT)
    network = NetworkManagementClient(credential, SUBSCRIPTION, base_url=ENDPOINT)
    graph = ResourceGraphClient(credential, base_url=ENDPOINT)
    storage = StorageManagementClient(credential, SUBSCRIPTION, base_url=ENDPOINT)
    registry = ContainerRegistryManagementClient(credential, SUBSCRIPTION, base_url=ENDPOINT)

    print("== listing")
    by_subscription = sorted(v.name for v in keyvault.vaults.list_by_subscription())
    check(by_subscription == ["kv-build", "kv-legacy", "kv-prod"], "vaults.list_by_subscription")
    by_group = sorted(v.name for v in keyvault.vaults.list_by_resource_group(GROUP))
    check(by_group == by_subscription, "vaults.list_by_resource_group")
    generic = sorted(r.name for r in keyvault.vaults.list())
    check(generic == by_subscription, "vaults.list (ARM's resources list, api-version 2015-11-01)")

    print("== create and update")
    poller = keyvault.vaults.begin_create_or_update(
        GROUP,
        NEW_VAULT,
        VaultCreateOrUpdateParameters(
            location="westeurope",
            tags={"owner": "sdk-test"},
            properties=VaultProperties(
                tenant_id=TENANT,
                sku=Sku(family="A", name="standard"),
                enable_rbac_authorization=True,
                network_acls=NetworkRuleSet(
                    default_action="Deny", bypass="AzureServices", ip_rules=[], virtual_network_rules=[]
                ),
            ),
        ),
    )
    created = poller.result()
    check(created.name == NEW_VAULT and created.properties.provisioning_state == "Succeeded",
          "vaults.begin_create_or_update creates a vault")
    check(created.system_data is not None and created.system_data.created_at is not None,
          "the new vault carries systemData")
    updated = keyvault.vaults.update(
        GROUP, NEW_VAULT, VaultPatchParameters(tags={"owner": "sdk-test", "tagfence": "AzureDevOps"})
    )
    check(updated.tags.get("tagfence") == "AzureDevOps", "vaults.update merges tags")
    check(keyvault.vaults.get(GROUP, NEW_VAULT).properties.enable_soft_delete is True,
          "a new vault has soft delete on")
    try:
        keyvault.vaults.update(
            GROUP, NEW_VAULT,
            VaultPatchParameters(properties=VaultPatchProperties(soft_delete_retention_in_days=3)),
        )
        refused = None
    except HttpResponseError as error:
        refused = error
    check(refused is not None and refused.status_code == 400, "a 3-day retention is refused")

    print("== tagfence, a person's edit, tagfence again")
    tagfence_apply("first")
    devops = next(tag for tag in network.service_tags.list("westeurope").values_property if tag.name == "AzureDevOps")
    expected = {
        str(ipaddress.ip_network(prefix))
        for prefix in devops.properties.address_prefixes
        if ipaddress.ip_network(prefix).version == 4
    } | {STATIC_RULE}
    first = set(rules_of(keyvault.vaults.get(GROUP, NEW_VAULT)))
    check(first == expected, f"the first run wrote AzureDevOps' {len(expected) - 1} IPv4 ranges and the static rule")

    # A person adds their own address the way `az keyvault network-rule add` does: GET, append,
    # full PUT.
    vault = keyvault.vaults.get(GROUP, NEW_VAULT)
    vault.properties.network_acls.ip_rules.append(IPRule(value=PERSON_RULE))
    keyvault.vaults.begin_create_or_update(
        GROUP,
        NEW_VAULT,
        VaultCreateOrUpdateParameters(location=vault.location, tags=vault.tags, properties=vault.properties),
    ).result()
    check(PERSON_RULE in rules_of(keyvault.vaults.get(GROUP, NEW_VAULT)), "the person's rule is stored")
    second_output = tagfence_apply("second")
    after = set(rules_of(keyvault.vaults.get(GROUP, NEW_VAULT)))
    check(after == expected | {PERSON_RULE}, "the second run kept the person's rule and changed nothing else")
    check("No changes" in second_output or "0 to add, 0 to remove" in second_output or "in sync" in second_output,
          "the second run found nothing to write")

    print("== Service Tags and Resource Graph")
    details = list(network.service_tag_information.list("westeurope", tag_name="AzureDevOps"))
    check(len(details) == 1 and details[0].name == "AzureDevOps", "service_tag_information.list with tag_name")
    tagged = graph.resources(
        QueryRequest(
            subscriptions=[SUBSCRIPTION],
            query="resources | where type =~ 'microsoft.keyvault/vaults' | where tags has 'AzureDevOps' | count",
        )
    )
    check(tagged.data == [{"Count": 3}], f"Resource Graph: has and count ({tagged.data})")

    print("== delete")
    keyvault.vaults.delete(GROUP, NEW_VAULT)
    remaining = sorted(v.name for v in keyvault.vaults.list_by_resource_group(GROUP))
    check(NEW_VAULT not in remaining, "vaults.delete removes the vault")

    storage_checks(storage, network)
    registry_checks(registry, network)
    graph_checks(graph, keyvault, storage, registry)

    print(f"sdk test: {passed} passed, 0 failed")


def devops_ipv4(network):
    devops = next(tag for tag in network.service_tags.list("westeurope").values_property if tag.name == "AzureDevOps")
    return [prefix for prefix in devops.properties.address_prefixes if ipaddress.ip_network(prefix).version == 4]


def storage_checks(storage, network):
    print(f"== a storage account (azure-mgmt-storage, api-version {storage._config.api_version})")
    emulator_requests("DELETE")
    account = storage.storage_accounts.get_properties(STORAGE_GROUP, STORAGE_ACCOUNT)
    acls = account.network_rule_set  # flattened from properties.networkAcls
    check(account.kind == "StorageV2" and account.sku.name == "Standard_LRS",
          "storage_accounts.get_properties of the sample account")
    check([(rule.ip_address_or_range, rule.action) for rule in acls.ip_rules] == [("52.174.10.21", "Allow")],
          "its ip_rules deserialise with ip_address_or_range and action")
    check(acls.bypass == "AzureServices" and acls.default_action == "Deny", "bypass and default_action")
    (vnet_rule,) = acls.virtual_network_rules
    check(vnet_rule.virtual_network_resource_id.endswith("/virtualNetworks/vnet-agents/subnets/agents")
          and vnet_rule.action == "Allow" and vnet_rule.state == "Succeeded",
          "virtual_network_rules (id, action, state)")
    (access_rule,) = acls.resource_access_rules
    check(access_rule.tenant_id == TENANT and access_rule.resource_id.endswith("/workspaces/syn-prod"),
          "resource_access_rules (tenant_id, resource_id)")
    vnet_before = [rule.as_dict() for rule in acls.virtual_network_rules]
    access_before = [rule.as_dict() for rule in acls.resource_access_rules]

    # A person adds their address as `az storage account network-rule add` does: read the rule
    # set, append, send the whole set back in a PATCH.
    acls.ip_rules.append(StorageIPRule(ip_address_or_range=STORAGE_PERSON_RULE, action="Allow"))
    returned = storage.storage_accounts.update(
        STORAGE_GROUP, STORAGE_ACCOUNT, StorageAccountUpdateParameters(network_rule_set=acls)
    )
    check(STORAGE_PERSON_RULE in [rule.ip_address_or_range for rule in returned.network_rule_set.ip_rules],
          "storage_accounts.update with the whole rule set stores the person's rule (answer)")

    check(sdk_versions(["StorageAccountGet", "StorageAccountPatch"]) == [storage._config.api_version] * 2,
          "the SDK's GET and PATCH carried its default api-version, which the emulator accepts")

    emulator_requests("DELETE")
    _, report, _ = tagfence_apply_resource(STORAGE_ID, "storage, first")
    check(outcome_of(report) == ("applied", True) and len(emulator_requests(route="StorageAccountPatch")) == 1,
          "the first run applied the storage account (one PATCH)")
    expected = bare_form(devops_ipv4(network)) | {BARE_STATIC_RULE, "52.174.10.21", STORAGE_PERSON_RULE}
    after = storage.storage_accounts.get_properties(STORAGE_GROUP, STORAGE_ACCOUNT).network_rule_set
    values = [rule.ip_address_or_range for rule in after.ip_rules]
    check(set(values) == expected and len(values) == len(expected),
          f"read back: the person's rules kept, AzureDevOps' ranges and {BARE_STATIC_RULE} added ({len(expected)} rules)")
    check(not any(value.endswith(("/32", "/31")) for value in values), "single addresses are bare (no /32)")
    check(all(rule.action == "Allow" for rule in after.ip_rules), "every ip rule carries action Allow")
    check([rule.as_dict() for rule in after.virtual_network_rules] == vnet_before
          and [rule.as_dict() for rule in after.resource_access_rules] == access_before
          and after.bypass == "AzureServices" and after.default_action == "Deny",
          "virtual network rules, resource access rules, bypass and default_action unchanged")

    emulator_requests("DELETE")
    _, report, _ = tagfence_apply_resource(STORAGE_ID, "storage, second")
    patches = emulator_requests(route="StorageAccountPatch")
    check(outcome_of(report) == ("in_sync", False) and patches == [],
          "the second run writes nothing (in sync, no PATCH sent)")

    for small in ("52.174.99.4/32", "52.174.99.4/31"):
        rules = storage.storage_accounts.get_properties(STORAGE_GROUP, STORAGE_ACCOUNT).network_rule_set
        rules.ip_rules.append(StorageIPRule(ip_address_or_range=small, action="Allow"))
        index = len(rules.ip_rules) - 1
        error = refusal(lambda: storage.storage_accounts.update(
            STORAGE_GROUP, STORAGE_ACCOUNT, StorageAccountUpdateParameters(network_rule_set=rules)))
        named = error is not None and f"networkAcls.ipRule[{index}].value" in str(error) and small in str(error)
        if error is not None and not named:
            print(error, file=sys.stderr)
        check(error is not None and error.status_code == 400 and error.error.code == "InvalidValuesForRequestParameters"
              and named, f"an update with {small} is refused: 400 naming ipRule[{index}] and the value")
    final = storage.storage_accounts.get_properties(STORAGE_GROUP, STORAGE_ACCOUNT).network_rule_set
    check(sorted(rule.ip_address_or_range for rule in final.ip_rules) == sorted(values),
          "the refused updates changed nothing")


def registry_rules(registry_model):
    return [(rule.action, rule.ip_address_or_range) for rule in registry_model.network_rule_set.ip_rules or []]


def registry_checks(registry, network):
    print(f"== container registries (azure-mgmt-containerregistry, api-version {registry._config.api_version})")
    emulator_requests("DELETE")
    premium = registry.registries.get(REGISTRY_GROUP, PREMIUM_REGISTRY)
    check(premium.sku.name == "Premium" and premium.sku.tier == "Premium", "registries.get: the Premium sample's SKU")
    check(premium.network_rule_set.default_action == "Deny"
          and registry_rules(premium) == [("Allow", "52.174.10.22")],
          "its network_rule_set: default_action, ip_rules with action and ip_address_or_range")

    emulator_requests("DELETE")
    _, report, _ = tagfence_apply_resource(PREMIUM_REGISTRY_ID, "registry, first")
    check(outcome_of(report) == ("applied", True) and len(emulator_requests(route="RegistryPatch")) == 1,
          "the first run applied the registry (one PATCH)")
    expected = bare_form(devops_ipv4(network)) | {BARE_STATIC_RULE, "52.174.10.22"}
    after = registry.registries.get(REGISTRY_GROUP, PREMIUM_REGISTRY)
    values = [value for _, value in registry_rules(after)]
    check(set(values) == expected and len(values) == len(expected),
          f"read back: the person's rule kept, AzureDevOps' ranges and {BARE_STATIC_RULE} added ({len(expected)} rules)")
    check(all(action == "Allow" for action, _ in registry_rules(after)) and after.network_rule_set.default_action == "Deny"
          and after.sku.name == "Premium", "every rule Allow; default_action and SKU unchanged")

    # A person adds their address through the SDK's long-running update (the emulator answers
    # 200 at once; the poller must finish on it).
    emulator_requests("DELETE")
    rules = after.network_rule_set
    rules.ip_rules.append(RegistryIPRule(action="Allow", ip_address_or_range=REGISTRY_PERSON_RULE))
    poller = registry.registries.begin_update(
        REGISTRY_GROUP, PREMIUM_REGISTRY, RegistryUpdateParameters(network_rule_set=rules)
    )
    updated = poller.result(timeout=30)
    check(poller.done() and poller.status() == "Succeeded"
          and ("Allow", REGISTRY_PERSON_RULE) in registry_rules(updated),
          "registries.begin_update(...).result() finishes on the 200 with the person's rule")
    patches = emulator_requests(route="RegistryPatch")
    check([record["status"] for record in patches] == [200]
          and sdk_versions(["RegistryPatch"]) == [registry._config.api_version],
          "the SDK's PATCH carried its default api-version and the emulator answered 200")
    check(("Allow", REGISTRY_PERSON_RULE) in registry_rules(registry.registries.get(REGISTRY_GROUP, PREMIUM_REGISTRY)),
          "the person's rule is stored")
    emulator_requests("DELETE")
    _, report, _ = tagfence_apply_resource(PREMIUM_REGISTRY_ID, "registry, second")
    kept = {value for _, value in registry_rules(registry.registries.get(REGISTRY_GROUP, PREMIUM_REGISTRY))}
    check(kept == expected | {REGISTRY_PERSON_RULE} and outcome_of(report) == ("in_sync", False)
          and emulator_requests(route="RegistryPatch") == [],
          "the second run kept the person's rule and wrote nothing (no PATCH sent)")

    standard_before = registry.registries.get(REGISTRY_GROUP, STANDARD_REGISTRY)
    check(standard_before.sku.name == "Standard" and registry_rules(standard_before) == [],
          "registries.get: the Standard sample, no ip rules")
    _, report, stderr = tagfence_apply_resource(STANDARD_REGISTRY_ID, "the Standard registry", expect=2)
    said = (json.dumps(report) if report else "") + stderr
    check("Premium" in said and STANDARD_REGISTRY in said
          and report is not None and outcome_of(report) == ("refused", False),
          "tagfence refuses the Standard registry and says why (Premium only), writing nothing")
    standard_after = registry.registries.get(REGISTRY_GROUP, STANDARD_REGISTRY)
    check(standard_after.as_dict() == standard_before.as_dict(), "the SDK shows the Standard registry unchanged")


def graph_checks(graph, keyvault, storage, registry):
    print("== Resource Graph over every kind")
    answer = graph.resources(
        QueryRequest(
            subscriptions=[SUBSCRIPTION],
            query=(
                "resources"
                " | where type in~ ('microsoft.keyvault/vaults', 'microsoft.storage/storageaccounts',"
                " 'microsoft.containerregistry/registries')"
                " | project name, type, networkAcls = properties.networkAcls,"
                " networkRuleSet = properties.networkRuleSet"
                " | order by name asc"
            ),
        )
    )
    rows = {row["name"]: row for row in answer.data}
    check(sorted(rows) == ["crtagfencedev", "crtagfenceprod", "kv-build", "kv-legacy", "kv-prod", "sttagfenceprod"]
          and answer.total_records == 6, f"one query returns the six sample resources ({sorted(rows)})")
    check(all(rows[name]["type"] == "microsoft.keyvault/vaults" for name in ("kv-build", "kv-legacy", "kv-prod"))
          and rows["sttagfenceprod"]["type"] == "microsoft.storage/storageaccounts"
          and rows["crtagfenceprod"]["type"] == "microsoft.containerregistry/registries",
          "each row's type, lower-cased")
    vault_acls = {
        name: sorted(rule["value"] for rule in (rows[name]["networkAcls"] or {}).get("ipRules", []))
        for name in ("kv-build", "kv-legacy", "kv-prod")
    }
    check(vault_acls == {name: sorted(rules_of(keyvault.vaults.get(GROUP, name))) for name in vault_acls},
          "the vaults' networkAcls column agrees with vaults.get")
    account = storage.storage_accounts.get_properties(STORAGE_GROUP, STORAGE_ACCOUNT)
    check(rows["sttagfenceprod"]["networkAcls"] == account.network_rule_set.as_dict()
          and rows["sttagfenceprod"]["networkRuleSet"] is None,
          "the storage account's networkAcls column equals get_properties' network_rule_set")
    for name in (PREMIUM_REGISTRY, STANDARD_REGISTRY):
        model = registry.registries.get(REGISTRY_GROUP, name)
        check(rows[name]["networkRuleSet"] == model.network_rule_set.as_dict() and rows[name]["networkAcls"] is None,
              f"{name}'s networkRuleSet column equals registries.get")


if __name__ == "__main__":
    main()
