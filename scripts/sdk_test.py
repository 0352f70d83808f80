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
"""

import ipaddress
import os
import subprocess
import sys

from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
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

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
GROUP = "rg-secrets"
TENANT = "00000000-0000-0000-0000-0000000000aa"
NEW_VAULT = "kv-sdk"
PERSON_RULE = "52.174.99.1/32"  # a person's own public address
STATIC_RULE = "52.1.2.3/32"  # the self-hosted agent tagfence is told about (as in README)

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

    print(f"sdk test: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
